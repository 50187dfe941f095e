//! Compiles one loaded integration file: identifiers, value expressions,
//! templates, guards, names and contracts, collecting every diagnostic.

use std::time::Duration;

use saphyr_parser::ScalarStyle;
use serde_json::{Map, Value};

use super::contract::{Contract, Contracts, Lookup};
use super::ident::{Ident, TableName};
use super::route::{
    ColumnSpan, Columns, Guard, Integration, OnDead, OrderKey, RetryPolicy, Route, Step, StepKind,
    StepSpans, ValueExpr,
};
use super::template::{
    Analyser, TemplateForm, TemplateProblemKind, TemplateSources, classify, is_template,
};
use crate::config::LoadedFile;
use crate::config::model::{Missing, RouteModel, StepModel};
use crate::config::yaml::escape_pointer_token;
use crate::diagnostics::{Code, Diagnostic, Position, did_you_mean};
use crate::envelope::ENVELOPE_FIELDS;
use crate::jsonpath::{JsonPath, Segment};

/// Names a template may use that no step defines.
const CONTEXT_NAMES: [&str; 2] = ["event", "data"];

/// What templates at one place of a route may refer to.
struct Scope<'a> {
    contract: Option<&'a Contract>,
    /// `as` names of earlier steps.
    defined: Vec<String>,
    /// `as` names of this and later steps, with the step that binds them.
    later: Vec<(String, usize)>,
}

pub(super) struct FileCompiler<'a> {
    file: &'a LoadedFile,
    analyser: &'a Analyser,
    contracts: &'a Contracts,
    templates: &'a mut TemplateSources,
    /// The schema already found errors: parts that cannot be read are
    /// skipped quietly, as they have been reported.
    schema_errors: bool,
    pub diagnostics: Vec<Diagnostic>,
}

impl<'a> FileCompiler<'a> {
    pub fn new(
        file: &'a LoadedFile,
        analyser: &'a Analyser,
        contracts: &'a Contracts,
        templates: &'a mut TemplateSources,
        schema_errors: bool,
    ) -> Self {
        FileCompiler {
            file,
            analyser,
            contracts,
            templates,
            schema_errors,
            diagnostics: Vec::new(),
        }
    }

    fn error(
        &mut self,
        position: Position,
        code: Code,
        message: impl Into<String>,
    ) -> &mut Diagnostic {
        self.diagnostics
            .push(Diagnostic::error(&self.file.path, position, code, message));
        self.diagnostics.last_mut().expect("just pushed")
    }

    fn warning(
        &mut self,
        position: Position,
        code: Code,
        message: impl Into<String>,
    ) -> &mut Diagnostic {
        self.diagnostics.push(Diagnostic::warning(
            &self.file.path,
            position,
            code,
            message,
        ));
        self.diagnostics.last_mut().expect("just pushed")
    }

    fn at(&self, pointer: &str) -> Position {
        self.file.document.spans.position(pointer)
    }

    fn key_at(&self, pointer: &str) -> Position {
        self.file.document.spans.key_position(pointer)
    }

    /// Where `needle` stands inside the string node at `pointer`, or the
    /// node itself when it cannot be found.
    ///
    /// `within` is the node's value and the byte offset of this needle in
    /// it, when known: the needle is then taken as the same occurrence in
    /// the source (the second `candidate` of a template that names it
    /// twice, the right line of a block scalar), not merely the first.
    fn locate(
        &self,
        pointer: &str,
        needle: Option<&str>,
        within: Option<(&str, usize)>,
    ) -> Position {
        let document = &self.file.document;
        let Some(node) = document.spans.node(pointer) else {
            return self.at(pointer);
        };
        let Some(needle) = needle.filter(|n| !n.is_empty()) else {
            return node.start;
        };
        let raw = document
            .source
            .slice(node.start_index, node.end_index.max(node.start_index));
        // Should a block scalar's span include its `|` or `>` header line,
        // the content starts after it.
        let content = match node.style {
            Some(ScalarStyle::Literal | ScalarStyle::Folded) if raw.starts_with(['|', '>']) => {
                raw.find('\n').map_or(0, |i| i + 1)
            }
            _ => 0,
        };
        let nth = within.map_or(0, |(value, offset)| {
            value
                .match_indices(needle)
                .take_while(|(i, _)| *i < offset)
                .count()
        });
        let found = raw[content..]
            .match_indices(needle)
            .nth(nth)
            .map(|(i, _)| content + i)
            .or_else(|| raw.find(needle));
        match found {
            Some(byte) => document
                .source
                .position(node.start_index + raw[..byte].chars().count()),
            None => node.start,
        }
    }

    /// Whether the node at `pointer` holds `text` as written, on one line
    /// (not folded or continued over several), so that positions in the
    /// text are columns in the file.
    fn written_as_is(&self, pointer: &str, text: &str) -> bool {
        let document = &self.file.document;
        document.spans.node(pointer).is_some_and(|node| {
            !text.contains('\n')
                && document
                    .source
                    .slice(node.start_index, node.end_index)
                    .contains(text)
        })
    }

    /// Compiles the file. The integration comes back even when the file
    /// has errors (with the parts that compiled), so that checks across
    /// files still see it; the flag says whether it is fit to run.
    pub fn compile(mut self) -> (Integration, bool, Vec<Diagnostic>) {
        let model = &self.file.model;
        let id = match &model.id {
            Some(id) => id.clone(),
            None => {
                let stem = self
                    .file
                    .path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("")
                    .to_owned();
                let valid = !stem.is_empty()
                    && stem
                        .chars()
                        .next()
                        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                    && stem
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
                if !valid {
                    self.error(
                        Position::START,
                        Code::InvalidValue,
                        format!("the file name `{stem}` cannot serve as the integration id"),
                    )
                    .help =
                        Some("add an `id:` of lowercase letters, digits, `-`, `_` and `.`".into());
                }
                stem
            }
        };
        let retry = self.retry();
        let order_by = self.order_by();
        let on_dead = match model.on_dead.as_deref() {
            Some("block") => OnDead::Block,
            _ => OnDead::Continue,
        };
        let mut routes = Vec::new();
        for route in &model.routes {
            if let Some(route) = self.route(route.index, route) {
                routes.push(route);
            }
        }
        self.duplicate_routes(&routes);
        self.route_names(&routes);
        let id_position = if model.id.is_some() {
            self.at("/id")
        } else {
            Position::START
        };
        self.unordered_writes(&id, &routes, id_position);
        let fingerprint = super::route::fingerprint(self.file.document.source.text.as_bytes());
        let ok = !self.schema_errors && !self.diagnostics.iter().any(Diagnostic::is_error);
        let integration = Integration {
            id,
            id_position,
            description: model.description.clone(),
            enabled: model.enabled.unwrap_or(true),
            source: model.source.clone(),
            target: model.target.clone(),
            retry,
            order_by,
            on_dead,
            routes,
            database: None,
            reads_from: Vec::new(),
            file: self.file.path.clone(),
            fingerprint,
        };
        (integration, ok, self.diagnostics)
    }

    /// An integration that writes to tables and leaves `order_by` out is
    /// ordered by the organization (the default): correct, but a delivery
    /// that retries holds back every later event of its organization for
    /// this integration, not only those of the record it changes. Said
    /// once per file, where the integration is named; writing any
    /// `order_by` (`$.organization_id` included) is the answer. Like a
    /// lint, it is about a file that works: while the file has errors it
    /// waits (the corpus of broken files stays about what is broken).
    fn unordered_writes(&mut self, id: &str, routes: &[Route], position: Position) {
        if self.file.model.order_by.is_some()
            || self.schema_errors
            || self.diagnostics.iter().any(Diagnostic::is_error)
        {
            return;
        }
        let Some(write) = routes.iter().flat_map(|r| &r.steps).find(|s| {
            matches!(
                s.kind,
                StepKind::Upsert { .. } | StepKind::Update { .. } | StepKind::Delete { .. }
            )
        }) else {
            return;
        };
        let table = write
            .kind
            .table()
            .map(ToString::to_string)
            .unwrap_or_default();
        let keyword = write.kind.keyword();
        self.warning(
            position,
            Code::NoOrderBy,
            format!(
                "integration `{id}` writes (`{keyword}: {table}`) without `order_by`: its events are ordered per organization, so one delivery that retries holds back every later event of its organization"
            ),
        )
        .help = Some(
            "add `order_by: $.data.<entity id>` (the id of the record the events change, e.g. `$.data.candidate.id`) so that a retry holds back only that record's events; write `order_by: $.organization_id` to keep the order per organization".into(),
        );
    }

    /// `order_by:`: a plain JSONPath to an envelope field or into `data`.
    fn order_by(&mut self) -> OrderKey {
        let Some(raw) = self.file.model.order_by.clone() else {
            return OrderKey::default();
        };
        let position = self.at("/order_by");
        let Some(text) = raw.as_str() else {
            // The schema has reported the type.
            return OrderKey::default();
        };
        let help = "write a path such as `$.data.candidate.id`, `$.organization_id` or `$.id`";
        let path = match JsonPath::parse(text) {
            Ok(path) => path,
            Err(error) => {
                self.error(
                    position,
                    Code::InvalidJsonpath,
                    format!("`{text}` is not a JSONPath: {}", error.message),
                )
                .help = Some(help.into());
                return OrderKey::default();
            }
        };
        let mut segments = Vec::new();
        for segment in path.segments() {
            match segment {
                Segment::Key(key) => segments.push(key),
                Segment::Index(index) if index >= 0 => segments.push(index.to_string()),
                _ => {
                    self.error(
                        position,
                        Code::InvalidValue,
                        format!(
                            "`order_by: {text}` must name one value: plain names and indexes, no wildcards, filters or negative indexes"
                        ),
                    )
                    .help = Some(help.into());
                    return OrderKey::default();
                }
            }
        }
        let mut segments = segments.into_iter();
        let key = match (segments.next().as_deref(), segments.len()) {
            (Some("organization_id"), 0) => OrderKey::Organization,
            (Some("id"), 0) => OrderKey::Id,
            (Some("source"), 0) => OrderKey::Source,
            (Some("event"), 0) => OrderKey::Event,
            (Some("data"), n) if n > 0 => OrderKey::Data(segments.collect()),
            _ => {
                self.error(
                    position,
                    Code::InvalidValue,
                    format!(
                        "`order_by: {text}` must be `$.organization_id`, `$.id`, `$.source`, `$.event` or a path into `$.data`"
                    ),
                )
                .help = Some(help.into());
                return OrderKey::default();
            }
        };
        // A path into data is checked against every routed event's contract:
        // a typo would otherwise order everything by the organization.
        if let OrderKey::Data(path) = &key {
            let wanted: Vec<Segment> = path
                .iter()
                .map(|s| match s.parse::<i64>() {
                    Ok(i) => Segment::Index(i),
                    Err(_) => Segment::Key(s.clone()),
                })
                .collect();
            let source = self.file.model.source.clone();
            let events: Vec<String> = self
                .file
                .model
                .routes
                .iter()
                .map(|r| r.on.clone())
                .collect();
            for event in events {
                let Some(contract) = self.contracts.get(&source, &event).cloned() else {
                    continue;
                };
                if let Lookup::Missing { at, known } = contract.lookup(&wanted) {
                    let field = path[..=at.min(path.len() - 1)].join(".");
                    let message = format!(
                        "`order_by: {text}`: `data.{field}` is not in the contract for {source}/{event} ({})",
                        contract.file.display()
                    );
                    let suggestion = did_you_mean(
                        &path[at.min(path.len() - 1)],
                        known.iter().map(String::as_str),
                    );
                    let diagnostic = self.error(position, Code::NotInContract, message);
                    diagnostic.help = suggestion;
                    break;
                }
            }
        }
        key
    }

    fn retry(&mut self) -> RetryPolicy {
        let defaults = RetryPolicy::default();
        let Some(model) = self.file.model.retry.clone() else {
            return defaults;
        };
        let mut duration = |key: &str, text: Option<&String>, default: Duration| match text {
            None => default,
            Some(text) => match humantime::parse_duration(text) {
                Ok(duration) => duration,
                Err(error) => {
                    let pointer = format!("/retry/{key}");
                    let position = self.at(&pointer);
                    self.error(
                        position,
                        Code::InvalidValue,
                        format!("`{text}` is not a duration: {error}"),
                    )
                    .help = Some("write durations like `500ms`, `1s`, `10m` or `1h 30m`".into());
                    default
                }
            },
        };
        let initial = duration("initial", model.initial.as_ref(), defaults.initial);
        let max = duration("max", model.max.as_ref(), defaults.max);
        if initial > max {
            let position = self.at("/retry/initial");
            self.error(
                position,
                Code::InvalidValue,
                "`retry.initial` is longer than `retry.max`",
            );
        }
        RetryPolicy {
            max_attempts: model.max_attempts.unwrap_or(defaults.max_attempts),
            initial,
            max,
        }
    }

    fn route(&mut self, index: usize, model: &RouteModel) -> Option<Route> {
        let pointer = format!("/routes/{index}");
        let source = self.file.model.source.clone();
        let contract = self.contracts.get(&source, &model.on).cloned();
        if contract.is_none() {
            let position = self.at(&format!("{pointer}/on"));
            self.warning(
                position,
                Code::MissingContract,
                format!(
                    "`{source}/{}` has no contract (schemas/events/{source}/{}.json), so the fields this route reads are not checked",
                    model.on, model.on
                ),
            );
        }
        // Parse every step first, so templates can be checked against names
        // bound by later steps (a forward reference, not a typo).
        let mut steps_models = Vec::new();
        for (step_index, raw) in model.steps.iter().enumerate() {
            match StepModel::from_value(raw) {
                Ok(step) => steps_models.push((step_index, step)),
                Err(_) if self.schema_errors => {}
                Err(error) => {
                    let position = self.at(&format!("{pointer}/steps/{step_index}"));
                    self.error(
                        position,
                        Code::InvalidStep,
                        format!("cannot read this step: {error}"),
                    );
                }
            }
        }
        // Names come from the raw steps, so a step that could not be read
        // does not make every later use of its name an error too.
        let binds: Vec<(String, usize)> = model
            .steps
            .iter()
            .enumerate()
            .filter_map(|(i, raw)| {
                raw.get("as")
                    .and_then(Value::as_str)
                    .map(|n| (n.to_owned(), i))
            })
            .collect();
        self.check_binds(&pointer, &binds);

        let mut scope = Scope {
            contract: contract.as_deref(),
            defined: Vec::new(),
            later: binds.clone(),
        };
        let when = model
            .when
            .as_ref()
            .and_then(|raw| self.guard(&format!("{pointer}/when"), raw, &scope));
        let mut steps = Vec::new();
        for (step_index, step_model) in &steps_models {
            let step_pointer = format!("{pointer}/steps/{step_index}");
            // The names of the steps behind this one are defined, whether or
            // not those steps could be read; the rest are still "later".
            scope.later.retain(|(_, i)| i >= step_index);
            scope.defined = binds
                .iter()
                .filter(|(_, i)| i < step_index)
                .map(|(name, _)| name.clone())
                .collect();
            if let Some(step) = self.step(&step_pointer, *step_index, step_model, &scope) {
                steps.push(step);
            }
        }
        let ordinal = self
            .file
            .model
            .routes
            .iter()
            .filter(|r| r.index < index && r.on == model.on)
            .count();
        Some(Route {
            index,
            ordinal,
            on: model.on.clone(),
            name: model.name.clone(),
            description: model.description.clone(),
            when,
            steps,
            position: self.at(&pointer),
        })
    }

    fn check_binds(&mut self, route_pointer: &str, binds: &[(String, usize)]) {
        for (position_in_list, (name, step)) in binds.iter().enumerate() {
            let pointer = format!("{route_pointer}/steps/{step}/as");
            if CONTEXT_NAMES.contains(&name.as_str()) {
                let position = self.at(&pointer);
                self.error(
                    position,
                    Code::DuplicateName,
                    format!("`{name}` is reserved for the event; choose another `as` name"),
                );
            } else if let Some((_, first)) =
                binds[..position_in_list].iter().find(|(n, _)| n == name)
            {
                let position = self.at(&pointer);
                self.error(
                    position,
                    Code::DuplicateName,
                    format!(
                        "`{name}` is already bound by step {} of this route",
                        first + 1
                    ),
                );
            }
        }
    }

    fn step(
        &mut self,
        pointer: &str,
        index: usize,
        model: &StepModel,
        scope: &Scope<'_>,
    ) -> Option<Step> {
        let (when, description) = match model {
            StepModel::Find(m) => (&m.when, &m.description),
            StepModel::Upsert(m) => (&m.when, &m.description),
            StepModel::Update(m) => (&m.when, &m.description),
            StepModel::Delete(m) => (&m.when, &m.description),
            StepModel::Emit(m) => (&m.when, &m.description),
        };
        let when = when
            .as_ref()
            .and_then(|raw| self.guard(&format!("{pointer}/when"), raw, scope));
        let kind = match model {
            StepModel::Find(m) => StepKind::Find {
                table: self.table(&format!("{pointer}/find"), &m.find)?,
                filter: self.columns(&format!("{pointer}/where"), &m.filter, scope)?,
                missing: m.missing.unwrap_or(Missing::Null),
            },
            StepModel::Upsert(m) => {
                let table = self.table(&format!("{pointer}/upsert"), &m.upsert);
                let values = self.columns(&format!("{pointer}/values"), &m.values, scope);
                let mut key = Vec::new();
                for (i, column) in m.key.iter().enumerate() {
                    let key_pointer = format!("{pointer}/key/{i}");
                    let Some(ident) = self.ident(&key_pointer, column, false) else {
                        continue;
                    };
                    if !m.values.contains_key(column) {
                        let position = self.at(&key_pointer);
                        let help = did_you_mean(column, m.values.keys().map(String::as_str));
                        let diagnostic = self.error(
                            position,
                            Code::KeyNotInValues,
                            format!("key column `{column}` is not among `values`: the conflict target must be written"),
                        );
                        diagnostic.help = help;
                    }
                    key.push(ident);
                }
                StepKind::Upsert {
                    table: table?,
                    key,
                    values: values?,
                }
            }
            StepModel::Update(m) => StepKind::Update {
                table: self.table(&format!("{pointer}/update"), &m.update)?,
                filter: self.columns(&format!("{pointer}/where"), &m.filter, scope)?,
                set: self.columns(&format!("{pointer}/set"), &m.set, scope)?,
                missing: m.missing.unwrap_or(Missing::Null),
            },
            StepModel::Delete(m) => StepKind::Delete {
                table: self.table(&format!("{pointer}/delete"), &m.delete)?,
                filter: self.columns(&format!("{pointer}/where"), &m.filter, scope)?,
                missing: m.missing.unwrap_or(Missing::Null),
            },
            StepModel::Emit(m) => {
                let data_pointer = format!("{pointer}/data");
                let mut data = Vec::new();
                for (key, raw) in &m.data {
                    let value_pointer = format!("{data_pointer}/{}", escape_pointer_token(key));
                    if let Some(value) = self.value(&value_pointer, raw, scope) {
                        data.push((key.clone(), value));
                    }
                }
                self.check_emit_contract(pointer, &m.emit, &m.data);
                StepKind::Emit {
                    event: m.emit.clone(),
                    data,
                }
            }
        };
        Some(Step {
            index,
            when,
            bind: bind_of(model).map(str::to_owned),
            description: description.clone(),
            kind,
            position: self.at(pointer),
            spans: self.spans(pointer, model),
        })
    }

    /// Where the step's table, key items and columns stand.
    fn spans(&self, pointer: &str, model: &StepModel) -> StepSpans {
        type Sections<'m> = Vec<(&'static str, &'m Map<String, Value>)>;
        let (keyword, key, sections): (&str, &[String], Sections<'_>) = match model {
            StepModel::Find(m) => ("find", &[], vec![("where", &m.filter)]),
            StepModel::Upsert(m) => ("upsert", &m.key, vec![("values", &m.values)]),
            StepModel::Update(m) => ("update", &[], vec![("where", &m.filter), ("set", &m.set)]),
            StepModel::Delete(m) => ("delete", &[], vec![("where", &m.filter)]),
            StepModel::Emit(_) => ("emit", &[], Vec::new()),
        };
        let mut columns = Vec::new();
        for (section, map) in sections {
            for (column, value) in map {
                let column_pointer =
                    format!("{pointer}/{section}/{}", escape_pointer_token(column));
                let value_pointer = match value {
                    Value::Object(o) if o.contains_key("path") => format!("{column_pointer}/path"),
                    Value::Object(o) if o.contains_key("value") => {
                        format!("{column_pointer}/value")
                    }
                    Value::Object(o) if o.contains_key("template") => {
                        format!("{column_pointer}/template")
                    }
                    _ => column_pointer.clone(),
                };
                columns.push(ColumnSpan {
                    section,
                    column: column.clone(),
                    name: self.key_at(&column_pointer),
                    value: self.at(&value_pointer),
                });
            }
        }
        StepSpans {
            table: self.at(&format!("{pointer}/{keyword}")),
            key: (0..key.len())
                .map(|i| self.at(&format!("{pointer}/key/{i}")))
                .collect(),
            columns,
        }
    }

    fn table(&mut self, pointer: &str, text: &str) -> Option<TableName> {
        match TableName::parse(text) {
            Ok(table) => Some(table),
            Err(error) => {
                let position = self.at(pointer);
                self.error(
                    position,
                    Code::InvalidIdentifier,
                    format!("table `{text}`: {error}"),
                );
                None
            }
        }
    }

    /// Validates a column name; `as_key` says it is a mapping key (report
    /// at the key) rather than a list item.
    fn ident(&mut self, pointer: &str, name: &str, as_key: bool) -> Option<Ident> {
        match Ident::parse(name) {
            Ok(ident) => Some(ident),
            Err(error) => {
                let position = if as_key {
                    self.key_at(pointer)
                } else {
                    self.at(pointer)
                };
                self.error(position, Code::InvalidIdentifier, format!("column {error}"));
                None
            }
        }
    }

    fn columns(
        &mut self,
        pointer: &str,
        raw: &Map<String, Value>,
        scope: &Scope<'_>,
    ) -> Option<Columns> {
        let mut columns = Vec::new();
        let mut ok = true;
        for (name, value) in raw {
            let column_pointer = format!("{pointer}/{}", escape_pointer_token(name));
            let ident = self.ident(&column_pointer, name, true);
            let value = self.value(&column_pointer, value, scope);
            match (ident, value) {
                (Some(ident), Some(value)) => columns.push((ident, value)),
                _ => ok = false,
            }
        }
        ok.then_some(columns)
    }

    /// Compiles a value expression at `pointer`.
    fn value(&mut self, pointer: &str, raw: &Value, scope: &Scope<'_>) -> Option<ValueExpr> {
        match raw {
            Value::String(text) if text.starts_with('$') => {
                self.path(pointer, text, None, false, scope)
            }
            Value::String(text) if is_template(text) => {
                let (id, source) = self.template(pointer, text, scope)?;
                Some(ValueExpr::Template { id, source })
            }
            Value::Object(object) if object.contains_key("path") => {
                let text = object
                    .get("path")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let required = object
                    .get("required")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                self.path(
                    &format!("{pointer}/path"),
                    text,
                    object.get("default").cloned(),
                    required,
                    scope,
                )
            }
            Value::Object(object) if object.contains_key("template") => {
                let text = object
                    .get("template")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let (id, source) = self.template(&format!("{pointer}/template"), text, scope)?;
                Some(ValueExpr::Template { id, source })
            }
            Value::Object(object) if object.contains_key("value") => Some(ValueExpr::Literal(
                object.get("value").cloned().unwrap_or(Value::Null),
            )),
            Value::Object(object) => {
                let mut entries = Vec::new();
                let mut ok = true;
                for (key, value) in object {
                    let child = format!("{pointer}/{}", escape_pointer_token(key));
                    match self.value(&child, value, scope) {
                        Some(value) => entries.push((key.clone(), value)),
                        None => ok = false,
                    }
                }
                ok.then_some(ValueExpr::Object(entries))
            }
            Value::Array(items) => {
                let mut values = Vec::new();
                let mut ok = true;
                for (i, item) in items.iter().enumerate() {
                    match self.value(&format!("{pointer}/{i}"), item, scope) {
                        Some(value) => values.push(value),
                        None => ok = false,
                    }
                }
                ok.then_some(ValueExpr::Array(values))
            }
            literal => Some(ValueExpr::Literal(literal.clone())),
        }
    }

    fn path(
        &mut self,
        pointer: &str,
        text: &str,
        default: Option<Value>,
        required: bool,
        scope: &Scope<'_>,
    ) -> Option<ValueExpr> {
        let path = match JsonPath::parse(text) {
            Ok(path) => path,
            Err(error) => {
                let needle = error
                    .offset
                    .map(|offset| text.chars().skip(offset).take(8).collect::<String>());
                let within = error.offset.map(|offset| {
                    (
                        text,
                        text.char_indices()
                            .nth(offset)
                            .map_or(text.len(), |(byte, _)| byte),
                    )
                });
                let length = text.chars().count();
                let position = match error.offset {
                    // At the end of the path: find the whole path, then
                    // step past it (a path is written on one line).
                    Some(offset) if offset >= length && self.written_as_is(pointer, text) => {
                        let start = self.locate(pointer, Some(text), Some((text, 0)));
                        Position::new(start.line, start.column + length)
                    }
                    _ => self.locate(pointer, needle.as_deref(), within),
                };
                self.error(
                    position,
                    Code::InvalidJsonpath,
                    format!("invalid JSONPath `{text}`: {}", error.message),
                )
                .help = Some("paths look like `$.data.candidate.email` or `$.data.items[0].id`; write `{value: \"$...\"}` for a literal that starts with `$`".into());
                return None;
            }
        };
        let segments = path.segments();
        self.check_event_field(pointer, &segments, scope.contract, Some((text, 0)));
        Some(ValueExpr::Path {
            path,
            default,
            required,
        })
    }

    /// Checks that a path into the event (`data.candidate.email`, as
    /// segments after the root) names something the envelope and the
    /// event's contract can hold. `within` is the node's value and the byte
    /// offset in it where the path is written, to place the problem.
    fn check_event_field(
        &mut self,
        pointer: &str,
        segments: &[Segment],
        contract: Option<&Contract>,
        within: Option<(&str, usize)>,
    ) {
        let Some(Segment::Key(first)) = segments.first() else {
            return;
        };
        // Where segment `upto` is written: each key is looked for after the
        // one before it.
        let written_at = |upto: usize| {
            let (value, mut cursor) = within?;
            let mut at = None;
            for segment in &segments[..=upto] {
                if let Segment::Key(key) = segment {
                    let found = cursor + value.get(cursor..)?.find(key.as_str())?;
                    at = Some(found);
                    cursor = found + key.len();
                }
            }
            Some((value, at?))
        };
        if !ENVELOPE_FIELDS.contains(&first.as_str()) {
            let position = self.locate(pointer, Some(first), written_at(0));
            let help = did_you_mean(first, ENVELOPE_FIELDS);
            self.error(
                position,
                Code::NotInContract,
                format!(
                    "the event envelope has no field `{first}`; it has {}",
                    ENVELOPE_FIELDS.join(", ")
                ),
            )
            .help = help;
            return;
        }
        if first != "data" {
            return;
        }
        let Some(contract) = contract else { return };
        if let Lookup::Missing { at, known } = contract.lookup(&segments[1..]) {
            let Segment::Key(field) = &segments[1 + at] else {
                return;
            };
            let shown: Vec<String> = segments[..=1 + at]
                .iter()
                .map(|s| match s {
                    Segment::Key(k) => k.clone(),
                    Segment::Index(i) => i.to_string(),
                    Segment::Any => "*".into(),
                })
                .collect();
            let position = self.locate(pointer, Some(field), written_at(1 + at));
            let help = did_you_mean(field, known.iter().map(String::as_str)).or_else(|| {
                (!known.is_empty()).then(|| format!("the contract has: {}", known.join(", ")))
            });
            self.error(
                position,
                Code::NotInContract,
                format!(
                    "`{}` is not in the contract for {}/{} ({})",
                    shown.join("."),
                    contract.product,
                    contract.event,
                    contract.file.display()
                ),
            )
            .help = help;
        }
    }

    /// Compiles and checks a template string at `pointer`.
    fn template(
        &mut self,
        pointer: &str,
        text: &str,
        scope: &Scope<'_>,
    ) -> Option<(super::template::TemplateId, String)> {
        let form = classify(text);
        let analysis = self.analyser.analyse(&form);
        let source = match &form {
            TemplateForm::Expression(expr) => expr.as_str(),
            TemplateForm::Text(text) => text.as_str(),
        };
        // Offsets are into `source`; `base` turns them into offsets into `text`.
        let base = text.find(source).unwrap_or(0);
        let within = |offset: usize| Some((text, base + offset));
        // A multi-line template would break the one-line diagnostic format;
        // the position shows which line is meant.
        let what = if text.contains('\n') {
            "template".to_owned()
        } else {
            format!("template `{text}`")
        };
        let mut ok = true;
        for problem in &analysis.problems {
            ok = false;
            let needle = problem.needle.clone().or_else(|| {
                problem.range.clone().map(|range| {
                    let (start, end) = char_range(source, range);
                    let snippet = &source[start..end];
                    if snippet.trim().is_empty() {
                        source[start..].chars().take(8).collect()
                    } else {
                        snippet.to_owned()
                    }
                })
            });
            let offset = problem
                .range
                .clone()
                .map(|range| char_range(source, range).0);
            let position = self.locate(pointer, needle.as_deref(), offset.and_then(within));
            let code = match problem.kind {
                TemplateProblemKind::Syntax => Code::InvalidTemplate,
                TemplateProblemKind::UnknownFunction => Code::UnknownFunction,
            };
            self.error(position, code, format!("{what}: {}", problem.message));
        }
        // Only a template that parses has names to check.
        if analysis
            .problems
            .iter()
            .any(|p| p.kind == TemplateProblemKind::Syntax)
        {
            return None;
        }
        for name in &analysis.names {
            let root = name.root();
            let needle = name.offset.map(|offset| {
                source[offset..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect::<String>()
            });
            if root == "data" || root == "event" {
                let mut segments: Vec<Segment> = name
                    .path
                    .split('.')
                    .skip(1)
                    .map(|s| Segment::Key(s.to_owned()))
                    .collect();
                if root == "data" {
                    segments.insert(0, Segment::Key("data".into()));
                }
                let before = self.diagnostics.len();
                self.check_event_field(
                    pointer,
                    &segments,
                    scope.contract,
                    name.offset.and_then(within),
                );
                ok &= self.diagnostics.len() == before;
                continue;
            }
            if scope.defined.iter().any(|d| d == root) {
                continue;
            }
            ok = false;
            let position = self.locate(pointer, needle.as_deref(), name.offset.and_then(within));
            if let Some((_, step)) = scope.later.iter().find(|(n, _)| n == root) {
                self.error(
                    position,
                    Code::ForwardReference,
                    format!(
                        "`{root}` is bound by step {}, which runs after this one",
                        step + 1
                    ),
                );
            } else {
                let candidates: Vec<&str> = CONTEXT_NAMES
                    .iter()
                    .copied()
                    .chain(scope.defined.iter().map(String::as_str))
                    .collect();
                let help = did_you_mean(root, candidates.iter().copied())
                    .unwrap_or_else(|| format!("templates can use: {}", candidates.join(", ")));
                self.error(
                    position,
                    Code::UndefinedName,
                    format!("`{root}` is not defined"),
                )
                .help = Some(help);
            }
        }
        ok.then(|| (self.templates.add(form), text.to_owned()))
    }

    fn guard(&mut self, pointer: &str, raw: &Value, scope: &Scope<'_>) -> Option<Guard> {
        match raw {
            Value::Bool(b) => Some(Guard::Constant(*b)),
            Value::String(text) => {
                let expression = if is_template(text) {
                    match classify(text) {
                        TemplateForm::Expression(_) => text.clone(),
                        TemplateForm::Text(_) => {
                            let position = self.at(pointer);
                            self.error(
                                position,
                                Code::InvalidTemplate,
                                "a guard must be one expression, such as `{{ data.amount > 0 }}`",
                            );
                            return None;
                        }
                    }
                } else {
                    format!("{{{{ {text} }}}}")
                };
                let (id, _) = self.template(pointer, &expression, scope)?;
                Some(Guard::Expression {
                    id,
                    source: text.clone(),
                })
            }
            _ => None,
        }
    }

    fn check_emit_contract(&mut self, pointer: &str, event: &str, data: &Map<String, Value>) {
        let target = self.file.model.target.clone();
        let Some(contract) = self.contracts.get(&target, event).cloned() else {
            let position = self.at(&format!("{pointer}/emit"));
            self.warning(
                position,
                Code::MissingContract,
                format!("`{target}/{event}` has no contract (schemas/events/{target}/{event}.json), so what this step emits is not checked"),
            );
            return;
        };
        for (key, value) in data {
            let key_pointer = format!("{pointer}/data/{}", escape_pointer_token(key));
            match contract.lookup(&[Segment::Key(key.clone())]) {
                Lookup::Missing { known, .. } => {
                    let position = self.key_at(&key_pointer);
                    let help = did_you_mean(key, known.iter().map(String::as_str));
                    self.error(
                        position,
                        Code::EmitContract,
                        format!("`{key}` is not in the contract for {target}/{event}"),
                    )
                    .help = help;
                }
                Lookup::Found(schema) => {
                    let literal = match value {
                        Value::String(s) if s.starts_with('$') || is_template(s) => None,
                        Value::Object(_) | Value::Array(_) => None,
                        literal => Some(literal),
                    };
                    if let Some(literal) = literal
                        && let Ok(validator) = jsonschema::validator_for(schema)
                        && let Some(error) = validator.iter_errors(literal).next()
                    {
                        let position = self.at(&key_pointer);
                        self.error(
                            position,
                            Code::EmitContract,
                            format!(
                                "`{key}` does not fit the contract for {target}/{event}: {}",
                                error.masked()
                            ),
                        );
                    }
                }
                Lookup::Open => {}
            }
        }
        let missing: Vec<String> = contract
            .schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|field| !data.contains_key(*field))
            .map(|field| format!("`{field}`"))
            .collect();
        if !missing.is_empty() {
            let position = self.at(&format!("{pointer}/emit"));
            self.error(
                position,
                Code::EmitContract,
                format!(
                    "the contract for {target}/{event} requires {}, which this step does not set",
                    missing.join(", ")
                ),
            );
        }
    }

    /// Two routes for the same event in one file, neither guarded, are
    /// surely a mistake: they would both run, in an order nobody chose.
    /// Route identities: a name is used once per integration, and each
    /// event has at most one route without a name (rows find their route
    /// by name, so two unnamed ones could not be told apart).
    fn route_names(&mut self, routes: &[Route]) {
        for (i, route) in routes.iter().enumerate() {
            let earlier = &routes[..i];
            match &route.name {
                Some(name) => {
                    if let Some(first) = earlier.iter().find(|r| r.name.as_ref() == Some(name)) {
                        let position = self.at(&format!("/routes/{}/name", route.index));
                        self.error(
                            position,
                            Code::DuplicateName,
                            format!(
                                "route name `{name}` is already used at line {}; each route's name must be unique in the integration",
                                first.position.line
                            ),
                        );
                    }
                }
                None => {
                    // An unguarded one after another is a `duplicate-route`.
                    let same_event = |r: &&Route| r.on == route.on && r.name.is_none();
                    if route.when.is_none()
                        && earlier.iter().any(|r| same_event(&r) && r.when.is_none())
                    {
                        continue;
                    }
                    if let Some(first) = earlier.iter().find(same_event) {
                        let position = self.at(&format!("/routes/{}/on", route.index));
                        self.error(
                            position,
                            Code::RouteNeedsName,
                            format!(
                                "the route at line {} handles `{}` too: give these routes a `name:` (all but one may need it), so that their deliveries keep their route when routes are added, moved or removed",
                                first.position.line, route.on
                            ),
                        );
                    }
                }
            }
        }
    }

    fn duplicate_routes(&mut self, routes: &[Route]) {
        for (i, route) in routes.iter().enumerate() {
            if let Some(first) = routes[..i].iter().find(|r| {
                r.on == route.on
                    && r.when.is_none()
                    && route.when.is_none()
                    && r.name.is_none()
                    && route.name.is_none()
            }) {
                let position = self.at(&format!("/routes/{}/on", route.index));
                self.error(
                    position,
                    Code::DuplicateRoute,
                    format!(
                        "`{}` is already routed at line {}; merge the steps into one route, or give each a `when` guard or a `name`",
                        route.on, first.position.line
                    ),
                );
            }
        }
    }
}

/// A byte range of `text` clamped to it and widened to whole characters
/// (minijinja may report a range ending inside a multi-byte character).
fn char_range(text: &str, range: std::ops::Range<usize>) -> (usize, usize) {
    let mut start = range.start.min(text.len());
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let mut end = range.end.clamp(start, text.len());
    while !text.is_char_boundary(end) {
        end += 1;
    }
    (start, end)
}

fn bind_of(step: &StepModel) -> Option<&str> {
    match step {
        StepModel::Find(m) => m.bind.as_deref(),
        StepModel::Upsert(m) => m.bind.as_deref(),
        StepModel::Update(m) => m.bind.as_deref(),
        StepModel::Delete(_) | StepModel::Emit(_) => None,
    }
}
