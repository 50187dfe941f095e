//! The executable form of an integration: routes of steps whose values are
//! compiled expressions. Built by the compiler, run by
//! [`crate::mapping::run_route`] — in `render`, `test` and the engine alike.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::ident::{Ident, TableName};
use super::template::TemplateId;
use crate::config::model::Missing;
use crate::diagnostics::Position;
use crate::jsonpath::JsonPath;

/// One compiled integration file.
#[derive(Debug)]
pub struct Integration {
    pub id: String,
    /// Where `id:` stands (the file's start when the id is the file name).
    pub id_position: Position,
    pub description: Option<String>,
    /// `enabled:` in YAML; the persisted state from the API is kept apart.
    pub enabled: bool,
    pub source: String,
    pub target: String,
    pub retry: RetryPolicy,
    /// What its deliveries are ordered by (`order_by:`).
    pub order_by: OrderKey,
    /// What a dead delivery does to the later events of its key.
    pub on_dead: OnDead,
    pub routes: Vec<Route>,
    /// The database its writes go to (`databases.yaml`), `None` for
    /// busbar's own: the one whose transaction carries its lanes'
    /// progress.
    pub database: Option<String>,
    /// The other databases its `find`s read (neither busbar's own nor
    /// `database`), in the order the steps name them.
    pub reads_from: Vec<String>,
    /// The file it came from.
    pub file: PathBuf,
    /// The SHA-256 of the file's text (hex): a reload tells changed
    /// integrations by it, and busbar processes sharing a database agree on
    /// an integration's definition by it.
    pub fingerprint: String,
}

impl Integration {
    /// The other databases it uses: the one it writes to, then those its
    /// `find`s read.
    pub fn databases_used(&self) -> impl Iterator<Item = &str> {
        self.database
            .iter()
            .chain(&self.reads_from)
            .map(String::as_str)
    }
}

/// An integration's fingerprint of `definition`: the SHA-256 of its bytes,
/// in hex (see [`Integration::fingerprint`]).
pub(crate) fn fingerprint(definition: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(definition)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Integration {
    /// The events it listens to, each once, in file order.
    pub fn events(&self) -> Vec<String> {
        let mut events: Vec<String> = Vec::new();
        for route in &self.routes {
            if !events.contains(&route.on) {
                events.push(route.on.clone());
            }
        }
        events
    }

    /// The routes that handle `event`, in file order.
    pub fn routes_for<'a>(&'a self, event: &'a str) -> impl Iterator<Item = &'a Route> + 'a {
        self.routes.iter().filter(move |r| r.on == event)
    }
}

/// What an integration orders its deliveries by: deliveries whose events
/// have the same key apply one at a time, in publish order. Stored as JSON
/// with each partitioning version (`store::partitionings`).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderKey {
    /// The event's organization (the default).
    #[default]
    Organization,
    /// The event's id: every event is its own key (no ordering).
    Id,
    /// The source product.
    Source,
    /// The event name.
    Event,
    /// A path into `data`: object keys, and array indexes written as
    /// decimal text.
    Data(Vec<String>),
}

impl OrderKey {
    /// The key of one event, as text. A path that finds nothing, or null,
    /// gives the organization: such events are ordered with their
    /// organization's.
    pub fn key_of(&self, envelope: &crate::envelope::Envelope) -> String {
        match self {
            OrderKey::Organization => envelope.organization_id.to_string(),
            OrderKey::Id => envelope.id.to_string(),
            OrderKey::Source => envelope.source.clone(),
            OrderKey::Event => envelope.event.clone(),
            OrderKey::Data(path) => {
                let mut node = &envelope.data;
                for segment in path {
                    let next = match node {
                        Value::Object(map) => map.get(segment),
                        Value::Array(items) => {
                            segment.parse::<usize>().ok().and_then(|i| items.get(i))
                        }
                        _ => None,
                    };
                    match next {
                        Some(next) => node = next,
                        None => return envelope.organization_id.to_string(),
                    }
                }
                match node {
                    Value::Null => envelope.organization_id.to_string(),
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                }
            }
        }
    }

    /// The key as written in YAML.
    pub fn describe(&self) -> String {
        match self {
            OrderKey::Organization => "$.organization_id".into(),
            OrderKey::Id => "$.id".into(),
            OrderKey::Source => "$.source".into(),
            OrderKey::Event => "$.event".into(),
            OrderKey::Data(path) => {
                let mut text = String::from("$.data");
                for segment in path {
                    if segment.chars().all(|c| c.is_ascii_digit()) {
                        text.push_str(&format!("[{segment}]"));
                    } else {
                        text.push('.');
                        text.push_str(segment);
                    }
                }
                text
            }
        }
    }
}

/// What a dead delivery does to the later events of its key (`on_dead:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnDead {
    /// The key's later events run (the default).
    #[default]
    Continue,
    /// The key's later events wait until the dead delivery is replayed.
    Block,
}

/// How transient failures are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            initial: Duration::from_secs(1),
            max: Duration::from_secs(600),
        }
    }
}

/// What one integration does for one event name.
#[derive(Debug)]
pub struct Route {
    /// Position among the integration's routes (0-based); with the
    /// integration id, it names the route in deliveries.
    pub index: usize,
    /// Position among the integration's routes for the same event (0 for
    /// the first): the order in which one event's routes run. Not its
    /// identity (that is `name`): moving a route changes it.
    pub ordinal: usize,
    pub on: String,
    /// The route's identity among the integration's routes for its event:
    /// its `name:`, or `None` for the one route of the event without one.
    /// Deliveries record it and find their route by it.
    pub name: Option<String>,
    pub description: Option<String>,
    pub when: Option<Guard>,
    pub steps: Vec<Step>,
    /// Where the route starts in its file, for messages.
    pub position: Position,
}

impl Route {
    /// The route's part of its deliveries' ids ([`crate::delivery::delivery_id`]):
    /// `0` for the unnamed route of its event (the id busbar has always
    /// given a single route), `name:<name>` for a named one.
    pub fn identity(&self) -> std::borrow::Cow<'_, str> {
        match &self.name {
            None => "0".into(),
            Some(name) => format!("name:{name}").into(),
        }
    }

    /// What a delivery row records in `route_name`: the name, or `""` for
    /// the unnamed route (`NULL` is a row written before routes had
    /// names).
    pub fn recorded_name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }
}

/// A condition: a literal, or a compiled expression tested for truth.
#[derive(Debug, Clone)]
pub enum Guard {
    Constant(bool),
    Expression { id: TemplateId, source: String },
}

/// One step of a route.
#[derive(Debug)]
pub struct Step {
    /// Position in the route (0-based).
    pub index: usize,
    pub when: Option<Guard>,
    /// The `as` name its row is bound to for later steps.
    pub bind: Option<String>,
    pub description: Option<String>,
    pub kind: StepKind,
    /// Where the step starts in its file, for messages.
    pub position: Position,
    /// Where its table, key and columns stand, for checks that run after
    /// compiling.
    pub spans: StepSpans,
}

/// Where the names and values a step uses stand in its file. Compiling is
/// done with the YAML's positions at hand; `check --database-url` runs
/// later, on the generation and the target database's catalog, and
/// reports at these positions.
#[derive(Debug, Clone, Default)]
pub struct StepSpans {
    /// The table name (`upsert: hris.employees`).
    pub table: Position,
    /// Each `key:` item, in order.
    pub key: Vec<Position>,
    /// Each column of `where`, `values` and `set`, in file order.
    pub columns: Vec<ColumnSpan>,
}

impl StepSpans {
    /// Where `column` of `section` (`where`, `values`, `set`) stands.
    pub fn column(&self, section: &str, column: &str) -> Option<&ColumnSpan> {
        self.columns
            .iter()
            .find(|c| c.section == section && c.column == column)
    }
}

/// Where one column of a step stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnSpan {
    /// `where`, `values` or `set`.
    pub section: &'static str,
    pub column: String,
    /// The column's name (the mapping key).
    pub name: Position,
    /// Its value (for the explicit forms, the `path:` or `value:` inside).
    pub value: Position,
}

/// Column name and the expression that gives its value, in file order.
pub type Columns = Vec<(Ident, ValueExpr)>;

/// What a step does.
#[derive(Debug)]
pub enum StepKind {
    Find {
        table: TableName,
        filter: Columns,
        missing: Missing,
    },
    Upsert {
        table: TableName,
        key: Vec<Ident>,
        values: Columns,
    },
    Update {
        table: TableName,
        filter: Columns,
        set: Columns,
        missing: Missing,
    },
    Delete {
        table: TableName,
        filter: Columns,
        missing: Missing,
    },
    Emit {
        event: String,
        data: Vec<(String, ValueExpr)>,
    },
}

impl StepKind {
    /// The keyword that introduces the step in YAML.
    pub fn keyword(&self) -> &'static str {
        match self {
            StepKind::Find { .. } => "find",
            StepKind::Upsert { .. } => "upsert",
            StepKind::Update { .. } => "update",
            StepKind::Delete { .. } => "delete",
            StepKind::Emit { .. } => "emit",
        }
    }

    /// The table the step reads or writes, if any.
    pub fn table(&self) -> Option<&TableName> {
        match self {
            StepKind::Find { table, .. }
            | StepKind::Upsert { table, .. }
            | StepKind::Update { table, .. }
            | StepKind::Delete { table, .. } => Some(table),
            StepKind::Emit { .. } => None,
        }
    }
}

/// A compiled value expression.
#[derive(Debug, Clone)]
pub enum ValueExpr {
    /// Taken as written.
    Literal(Value),
    /// A JSONPath on the event envelope.
    Path {
        path: JsonPath,
        default: Option<Value>,
        required: bool,
    },
    /// A minijinja template or single expression.
    Template { id: TemplateId, source: String },
    /// A mapping of expressions, evaluated to a JSON object.
    Object(Vec<(String, ValueExpr)>),
    /// A list of expressions, evaluated to a JSON array.
    Array(Vec<ValueExpr>),
}

impl ValueExpr {
    /// The expression as the user wrote it, for messages and `render`.
    pub fn source(&self) -> String {
        match self {
            ValueExpr::Literal(value) => value.to_string(),
            ValueExpr::Path { path, .. } => path.as_str().to_owned(),
            ValueExpr::Template { source, .. } => source.clone(),
            ValueExpr::Object(entries) => format!(
                "{{{}}}",
                entries
                    .iter()
                    .map(|(k, v)| format!("{k}: {}", v.source()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            ValueExpr::Array(items) => format!(
                "[{}]",
                items
                    .iter()
                    .map(ValueExpr::source)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}
