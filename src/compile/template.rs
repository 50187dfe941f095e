//! minijinja for busbar: one sandboxed environment per generation, the
//! filters busbar adds, the compiled template set, and the static analysis
//! that lets `check` find undefined names and unknown filters before an
//! event ever arrives.
//!
//! Templates are compiled once, when a generation is built, and live in a
//! [`TemplateSet`] that owns its environment. Evaluation is pure: a
//! template sees only the context it is given (no loader, no I/O), and
//! every render has a fuel budget so a runaway loop fails instead of
//! hanging a worker.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, SecondsFormat, Utc};
use minijinja::machinery::{Token, tokenize};
use minijinja::syntax::SyntaxConfig;
use minijinja::value::Value;
use minijinja::{
    AutoEscape, Environment, Error, ErrorKind, Expression, Template, UndefinedBehavior,
};

/// Instructions one template render may execute before it is stopped.
pub const FUEL: u64 = 50_000;

/// Functions busbar's templates can call, besides minijinja's builtins.
const RESERVED_GLOBALS: [&str; 4] = ["range", "dict", "namespace", "debug"];

/// Builds the environment every generation uses: strict about undefined
/// values, no auto-escaping (output goes into SQL parameters, not HTML),
/// a fuel limit, and busbar's filters.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    // `SemiStrict`: using, printing or iterating an undefined value is an
    // error, but `{% if data.x %}` on a missing field is simply false, which
    // is what a guard over optional fields means.
    env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(100);
    env.set_debug(false);
    env.add_filter("date", filter_date);
    env.add_filter("datetime", filter_datetime);
    env.add_filter("json", filter_json);
    env
}

/// `{{ value | date }}`: the calendar date (`YYYY-MM-DD`) of an RFC 3339
/// timestamp or a date; with a format argument, a `strftime` rendering.
fn filter_date(value: &str, format: Option<&str>) -> Result<String, Error> {
    // Already a calendar date: keep the text (after checking it is one).
    if format.is_none() && value.len() == 10 && value.parse::<NaiveDate>().is_ok() {
        return Ok(value.to_owned());
    }
    let date = parse_date(value).ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("`{value}` is not a date or RFC 3339 timestamp"),
        )
    })?;
    Ok(match format {
        // `NaiveDate`'s Display is `%Y-%m-%d`, without parsing a format string.
        None => date.to_string(),
        Some(format) => date.format(format).to_string(),
    })
}

/// `{{ value | datetime }}`: an RFC 3339 timestamp normalised to UTC.
fn filter_datetime(value: &str) -> Result<String, Error> {
    parse_datetime(value)
        .map(|dt| dt.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        .ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidOperation,
                format!("`{value}` is not an RFC 3339 timestamp"),
            )
        })
}

/// `{{ value | json }}`: the value serialized as JSON text.
fn filter_json(value: Value) -> Result<String, Error> {
    let json = crate::value::to_json(&value)
        .map_err(|message| Error::new(ErrorKind::InvalidOperation, message))?;
    Ok(json.to_string())
}

// The one parser of dates and times in event data: the `date` and
// `datetime` filters, the values bound to date and timestamp columns
// (`store::convert`) and `busbar test`'s comparisons all read them here.

/// A timestamp: RFC 3339, or a date and time without an offset (taken as
/// UTC), with `T` or a space between them.
pub fn parse_datetime(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(dt) = DateTime::parse_from_rfc3339(text) {
        return Some(dt.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f"))
        .ok()
        .map(|naive| naive.and_utc())
}

/// A timestamp as [`parse_datetime`] reads it, or a date (`YYYY-MM-DD`) at
/// midnight UTC: what a timestamp column takes.
pub fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    parse_datetime(text).or_else(|| {
        NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .ok()
            .map(|date| date.and_time(NaiveTime::MIN).and_utc())
    })
}

/// A date: `YYYY-MM-DD`, or the UTC date of a timestamp.
pub fn parse_date(text: &str) -> Option<NaiveDate> {
    // A plain date is the common case: `FromStr` is a fixed ISO parser,
    // far cheaper than the strftime-driven `parse_from_str` fallbacks.
    if text.len() == 10
        && let Ok(date) = text.parse::<NaiveDate>()
    {
        return Some(date);
    }
    parse_datetime(text)
        .map(|dt| dt.date_naive())
        .or_else(|| NaiveDate::parse_from_str(text, "%Y-%m-%d").ok())
}

/// How a template string is evaluated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateForm {
    /// Exactly one `{{ expr }}`: evaluated as an expression, keeping its type.
    Expression(String),
    /// Text mixed with tags: rendered to a string.
    Text(String),
}

/// Decides whether `source` is exactly one `{{ expr }}` (surrounding
/// whitespace allowed) or a text template.
pub fn classify(source: &str) -> TemplateForm {
    let trimmed = source.trim();
    if let Some(inner) = trimmed
        .strip_prefix("{{")
        .and_then(|rest| rest.strip_suffix("}}"))
    {
        let inner = inner.trim_start_matches('-').trim_end_matches('-');
        if !inner.contains("{{") && !inner.contains("}}") && !inner.contains("{%") {
            return TemplateForm::Expression(inner.trim().to_owned());
        }
    }
    TemplateForm::Text(source.to_owned())
}

/// Whether a string is a template at all (holds a minijinja tag).
pub fn is_template(source: &str) -> bool {
    source.contains("{{") || source.contains("{%")
}

/// A problem found in a template, with a byte range into its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateProblem {
    pub kind: TemplateProblemKind,
    pub message: String,
    /// Byte range in the template source, when known.
    pub range: Option<std::ops::Range<usize>>,
    /// The text to look for in the YAML source to place the problem.
    pub needle: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateProblemKind {
    Syntax,
    UnknownFunction,
}

/// A name a template reads from its context, e.g. `data.candidate.email`,
/// with where its root first appears (byte offset into the source).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameUse {
    /// The dotted path, as minijinja reports it (`employee.id`).
    pub path: String,
    pub offset: Option<usize>,
}

impl NameUse {
    /// The first segment: the context variable (`employee`).
    pub fn root(&self) -> &str {
        self.path.split('.').next().unwrap_or(&self.path)
    }
}

/// What static analysis learns from a template or expression.
#[derive(Debug, Clone, Default)]
pub struct Analysis {
    pub problems: Vec<TemplateProblem>,
    pub names: Vec<NameUse>,
}

/// Analyses templates against the environment: syntax, names used, and
/// filters, tests and functions that do not exist. One analyser serves a
/// whole compile and caches what it learns about filter names.
pub struct Analyser {
    env: Environment<'static>,
    known: Mutex<HashMap<(char, String), bool>>,
}

impl Default for Analyser {
    fn default() -> Self {
        Analyser {
            env: environment(),
            known: Mutex::new(HashMap::new()),
        }
    }
}

impl Analyser {
    pub fn analyse(&self, form: &TemplateForm) -> Analysis {
        let mut analysis = Analysis::default();
        let (source, in_expr) = match form {
            TemplateForm::Expression(expr) => (expr.as_str(), true),
            TemplateForm::Text(text) => (text.as_str(), false),
        };
        let compiled = match form {
            TemplateForm::Expression(expr) => self
                .env
                .compile_expression(expr)
                .map(|e| e.undeclared_variables(true)),
            TemplateForm::Text(text) => self
                .env
                .template_from_str(text)
                .map(|t| t.undeclared_variables(true)),
        };
        let names = match compiled {
            Ok(names) => names,
            Err(error) => {
                analysis.problems.push(TemplateProblem {
                    kind: TemplateProblemKind::Syntax,
                    message: describe_error(&error),
                    range: error.range(),
                    needle: None,
                });
                return analysis;
            }
        };
        let tokens: Vec<(Token<'_>, minijinja::machinery::Span)> =
            tokenize(source, in_expr, SyntaxConfig::default())
                .filter_map(Result::ok)
                .collect();
        let unknown_calls = self.check_callables(&tokens, &mut analysis);
        let mut names: Vec<String> = names
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        // `undeclared_variables` reports builtin functions it cannot know
        // are globals; they are not context names. Nor are calls to unknown
        // functions, already reported as such.
        names.retain(|name| {
            let root = name.split('.').next().unwrap_or("");
            !RESERVED_GLOBALS.contains(&root) && !unknown_calls.iter().any(|call| call == root)
        });
        for path in names {
            let root = path.split('.').next().unwrap_or("").to_owned();
            let offset = tokens.iter().enumerate().find_map(|(i, (token, span))| {
                let after_dot = i > 0 && matches!(tokens[i - 1].0, Token::Dot);
                match token {
                    Token::Ident(ident) if *ident == root && !after_dot => {
                        Some(span.start_offset as usize)
                    }
                    _ => None,
                }
            });
            analysis.names.push(NameUse { path, offset });
        }
        analysis
    }

    /// Finds filters (`| name`), tests (`is name`) and function calls
    /// (`name(`) that the environment does not define; returns the names
    /// of the unknown functions called.
    fn check_callables(
        &self,
        tokens: &[(Token<'_>, minijinja::machinery::Span)],
        analysis: &mut Analysis,
    ) -> Vec<String> {
        let mut unknown_calls = Vec::new();
        for (i, (token, span)) in tokens.iter().enumerate() {
            let Token::Ident(name) = token else { continue };
            let previous = i.checked_sub(1).map(|p| &tokens[p].0);
            let before_previous = i.checked_sub(2).map(|p| &tokens[p].0);
            let next = tokens.get(i + 1).map(|t| &t.0);
            let kind = match (before_previous, previous, next) {
                (_, Some(Token::Pipe), _) => 'f',
                (_, Some(Token::Ident("is")), _) if *name != "not" => 't',
                (Some(Token::Ident("is")), Some(Token::Ident("not")), _) => 't',
                (_, Some(Token::Dot), _) => continue,
                (_, _, Some(Token::ParenOpen)) => 'c',
                _ => continue,
            };
            if !self.exists(kind, name) {
                let what = match kind {
                    'f' => "filter",
                    't' => "test",
                    _ => {
                        unknown_calls.push((*name).to_owned());
                        "function"
                    }
                };
                analysis.problems.push(TemplateProblem {
                    kind: TemplateProblemKind::UnknownFunction,
                    message: format!("unknown {what} `{name}`"),
                    range: Some(span.start_offset as usize..span.end_offset as usize),
                    needle: Some((*name).to_owned()),
                });
            }
        }
        unknown_calls
    }

    /// Asks the environment itself whether a filter, test or function
    /// exists, by evaluating a probe and looking at the error kind.
    fn exists(&self, kind: char, name: &str) -> bool {
        let key = (kind, name.to_owned());
        if let Some(known) = self.known.lock().expect("analyser cache").get(&key) {
            return *known;
        }
        let exists = match kind {
            'c' => self.env.globals().any(|(global, _)| global == name),
            _ => {
                let probe = if kind == 'f' {
                    format!("none | {name}")
                } else {
                    format!("none is {name}")
                };
                let unknown = if kind == 'f' {
                    ErrorKind::UnknownFilter
                } else {
                    ErrorKind::UnknownTest
                };
                match self.env.compile_expression(&probe) {
                    Ok(expression) => match expression.eval(()) {
                        Ok(_) => true,
                        Err(error) => error.kind() != unknown,
                    },
                    Err(_) => true,
                }
            }
        };
        self.known
            .lock()
            .expect("analyser cache")
            .insert(key, exists);
        exists
    }
}

/// A minijinja error as one line, without the "(in template:line)" noise.
pub fn describe_error(error: &Error) -> String {
    let mut message = error.kind().to_string();
    if let Some(detail) = error.detail() {
        message.push_str(": ");
        message.push_str(detail);
    }
    message
}

/// Identifies a compiled template or expression in a [`TemplateSet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TemplateId {
    Expression(usize),
    Text(usize),
}

/// The sources of every template of a generation, collected while compiling.
#[derive(Debug, Clone, Default)]
pub struct TemplateSources {
    expressions: Vec<String>,
    texts: Vec<String>,
}

impl TemplateSources {
    /// Registers a template (already analysed and found valid).
    pub fn add(&mut self, form: TemplateForm) -> TemplateId {
        match form {
            TemplateForm::Expression(expr) => {
                self.expressions.push(expr);
                TemplateId::Expression(self.expressions.len() - 1)
            }
            TemplateForm::Text(text) => {
                self.texts.push(text);
                TemplateId::Text(self.texts.len() - 1)
            }
        }
    }
}

struct Compiled<'env> {
    expressions: Vec<Expression<'env, 'static>>,
    texts: Vec<Template<'env, 'env>>,
}

self_cell::self_cell!(
    struct TemplateCell {
        owner: Environment<'static>,
        #[covariant]
        dependent: Compiled,
    }
);

/// The compiled templates of one generation, owning their environment.
pub struct TemplateSet {
    cell: TemplateCell,
    /// Per expression: the lookup it is, when it only looks a value up.
    lookups: Vec<Option<Lookup>>,
}

/// An expression that only looks a value up: `data.offer.salary`,
/// `employee["id"]`, `data.items[0]`. Its value is a node of the JSON the
/// context was built from, which the mapping takes as it is, so that a
/// number passes through exactly (minijinja computes with 64-bit floats;
/// see [`crate::value::from_json`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// The context name it starts from (`data`, `event`, an `as` name).
    pub root: String,
    pub steps: Vec<LookupStep>,
}

/// One step of a [`Lookup`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupStep {
    Key(String),
    Index(usize),
}

impl Lookup {
    /// The lookup `expr` is, if it is nothing else: a name followed by
    /// `.name`, `.0`, `["key"]` or `[0]`.
    pub fn of(expr: &str) -> Option<Lookup> {
        let tokens: Vec<Token<'_>> = tokenize(expr, true, SyntaxConfig::default())
            .map(|token| token.map(|(token, _)| token))
            .collect::<Result<_, _>>()
            .ok()?;
        let mut tokens = tokens.into_iter();
        let Some(Token::Ident(root)) = tokens.next() else {
            return None;
        };
        let mut steps = Vec::new();
        while let Some(token) = tokens.next() {
            let step = match (token, tokens.next()) {
                (Token::Dot, Some(Token::Ident(name))) => LookupStep::Key(name.to_owned()),
                (Token::Dot, Some(Token::Int(index))) => {
                    LookupStep::Index(usize::try_from(index).ok()?)
                }
                (Token::BracketOpen, Some(key)) => {
                    let step = match key {
                        Token::Str(key) => LookupStep::Key(key.to_owned()),
                        Token::String(key) => LookupStep::Key(key.into()),
                        Token::Int(index) => LookupStep::Index(usize::try_from(index).ok()?),
                        _ => return None,
                    };
                    match tokens.next() {
                        Some(Token::BracketClose) => step,
                        _ => return None,
                    }
                }
                _ => return None,
            };
            steps.push(step);
        }
        Some(Lookup {
            root: root.to_owned(),
            steps,
        })
    }
}

impl std::fmt::Debug for TemplateSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let compiled = self.cell.borrow_dependent();
        f.debug_struct("TemplateSet")
            .field("expressions", &compiled.expressions.len())
            .field("texts", &compiled.texts.len())
            .finish()
    }
}

impl TemplateSet {
    /// Compiles every source. They were analysed before, so a failure here
    /// is a bug; it is reported rather than hidden.
    pub fn build(sources: TemplateSources) -> Result<TemplateSet, Error> {
        let lookups = sources.expressions.iter().map(|e| Lookup::of(e)).collect();
        let mut env = environment();
        for (i, text) in sources.texts.iter().enumerate() {
            env.add_template_owned(format!("t{i}"), text.clone())?;
        }
        let cell = TemplateCell::try_new(env, |env| {
            let expressions = sources
                .expressions
                .into_iter()
                .map(|expr| env.compile_expression_owned(expr))
                .collect::<Result<Vec<_>, _>>()?;
            let texts = (0..sources.texts.len())
                .map(|i| env.get_template(&format!("t{i}")))
                .collect::<Result<Vec<_>, _>>()?;
            Ok::<_, Error>(Compiled { expressions, texts })
        })?;
        Ok(TemplateSet { cell, lookups })
    }

    /// The lookup template `id` is, when it is only one.
    pub fn lookup(&self, id: TemplateId) -> Option<&Lookup> {
        match id {
            TemplateId::Expression(i) => self.lookups.get(i).and_then(Option::as_ref),
            TemplateId::Text(_) => None,
        }
    }

    /// Evaluates a template against a context: an expression yields its
    /// value, a text template the rendered string.
    pub fn eval(&self, id: TemplateId, context: &Value) -> Result<Value, Error> {
        let compiled = self.cell.borrow_dependent();
        match id {
            TemplateId::Expression(i) => compiled.expressions[i].eval(context),
            TemplateId::Text(i) => compiled.texts[i].render(context).map(Value::from),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_expression_keeps_its_type_and_mixed_text_is_a_string() {
        assert_eq!(
            classify("{{ data.x }}"),
            TemplateForm::Expression("data.x".into())
        );
        assert_eq!(
            classify("  {{- data.x -}} "),
            TemplateForm::Expression("data.x".into())
        );
        assert!(matches!(classify("a {{ x }}"), TemplateForm::Text(_)));
        assert!(matches!(classify("{{ a }}{{ b }}"), TemplateForm::Text(_)));
    }

    #[test]
    fn expressions_that_only_look_a_value_up_are_recognised() {
        let lookup = Lookup::of("data.items[0]['unit price'].amount").unwrap();
        assert_eq!(lookup.root, "data");
        assert_eq!(
            lookup.steps,
            [
                LookupStep::Key("items".into()),
                LookupStep::Index(0),
                LookupStep::Key("unit price".into()),
                LookupStep::Key("amount".into()),
            ]
        );
        assert_eq!(
            Lookup::of("employee.0").unwrap().steps,
            [LookupStep::Index(0)]
        );
        assert_eq!(Lookup::of("data").unwrap().steps, []);
        for computed in [
            "data.x + 1",
            "data.x | round",
            "data[data.k]",
            "data.x[-1]",
            "f(x)",
            "1",
        ] {
            assert_eq!(Lookup::of(computed), None, "{computed}");
        }
    }

    #[test]
    fn analysis_finds_names_with_offsets_and_unknown_filters() {
        let analyser = Analyser::default();
        let analysis = analyser.analyse(&classify("{{ employee.id | lowr }}"));
        assert_eq!(analysis.names.len(), 1);
        assert_eq!(analysis.names[0].path, "employee.id");
        assert_eq!(analysis.names[0].offset, Some(0));
        assert_eq!(analysis.problems.len(), 1);
        assert_eq!(analysis.problems[0].message, "unknown filter `lowr`");
        let analysis = analyser.analyse(&classify("{{ x is defined and y is not odd }}"));
        assert!(analysis.problems.is_empty(), "{:?}", analysis.problems);
        let analysis = analyser.analyse(&classify("{{ range(3) | list }}"));
        assert!(analysis.problems.is_empty(), "{:?}", analysis.problems);
        assert!(analysis.names.is_empty());
        let analysis = analyser.analyse(&classify("{{ nope(3) }}"));
        assert_eq!(analysis.problems[0].message, "unknown function `nope`");
    }

    #[test]
    fn syntax_errors_carry_a_range() {
        let analysis = Analyser::default().analyse(&classify("hello {{ x + }}"));
        assert_eq!(analysis.problems.len(), 1);
        assert_eq!(analysis.problems[0].kind, TemplateProblemKind::Syntax);
    }

    #[test]
    fn dates_and_times_are_read_one_way() {
        let midnight = "2024-03-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap();
        assert_eq!(parse_timestamp("2024-03-01"), Some(midnight));
        assert_eq!(parse_timestamp("2024-03-01 00:00:00"), Some(midnight));
        assert_eq!(parse_timestamp("2024-03-01T01:00:00+01:00"), Some(midnight));
        // The `datetime` filter wants a time of day.
        assert_eq!(parse_datetime("2024-03-01"), None);
        // A date is the UTC date of a timestamp.
        assert_eq!(
            parse_date("2024-03-01T23:30:00-01:00"),
            NaiveDate::from_ymd_opt(2024, 3, 2)
        );
        assert_eq!(
            parse_date("2024-03-01"),
            NaiveDate::from_ymd_opt(2024, 3, 1)
        );
        assert_eq!(parse_date("yesterday"), None);
    }

    #[test]
    fn busbar_filters_format_dates() {
        let env = environment();
        let render = |src: &str| env.render_str(src, ()).unwrap();
        assert_eq!(
            render("{{ '2026-03-01T22:30:00-05:00' | date }}"),
            "2026-03-02"
        );
        assert_eq!(
            render("{{ '2026-03-01' | date('%d/%m/%Y') }}"),
            "01/03/2026"
        );
        assert_eq!(
            render("{{ '2026-03-01T22:30:00-05:00' | datetime }}"),
            "2026-03-02T03:30:00Z"
        );
    }

    #[test]
    fn fuel_stops_runaway_templates() {
        let env = environment();
        let error = env
            .render_str("{% for i in range(100000) %}{{ i }}{% endfor %}", ())
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::OutOfFuel);
    }
}
