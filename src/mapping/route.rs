//! The step loop: guards, values, `missing:` handling and `as` bindings,
//! with the database behind an [`Executor`].

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use minijinja::value::{Enumerator, Object, Value as JinjaValue};
use serde::Serialize;
use serde_json::{Map, Value};

use super::{EventInput, MappingError, Scope};
use crate::compile::ident::{Ident, TableName};
use crate::compile::template::TemplateSet;
use crate::compile::{Columns, Route, Step, StepKind};
use crate::config::model::Missing;
use crate::value;

/// A row read or written by a step: column to value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub columns: Map<String, Value>,
    /// In a simulation (`render`), the columns are only those known without
    /// a database; any other column reads as a placeholder named
    /// `⟨label.column⟩`, so the output shows what depends on the database.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub simulated: Option<String>,
}

impl Row {
    pub fn new(columns: Map<String, Value>) -> Row {
        Row {
            columns,
            simulated: None,
        }
    }

    fn to_template_value(&self) -> JinjaValue {
        match &self.simulated {
            // A view over the row's JSON, so that a template that only looks
            // a number up gives it with every digit (`Scope::eval`).
            None => value::view(Arc::new(Value::Object(self.columns.clone()))),
            Some(label) => JinjaValue::from_object(SimulatedRow {
                label: label.clone(),
                known: self
                    .columns
                    .iter()
                    .map(|(k, v)| (k.clone(), value::from_json(v)))
                    .collect(),
            }),
        }
    }
}

/// A placeholder value as `render` shows it: `⟨employee.id⟩`.
pub fn placeholder(label: &str, column: &str) -> String {
    format!("⟨{label}.{column}⟩")
}

#[derive(Debug)]
struct SimulatedRow {
    label: String,
    known: Vec<(String, JinjaValue)>,
}

impl Object for SimulatedRow {
    fn get_value(self: &Arc<Self>, key: &JinjaValue) -> Option<JinjaValue> {
        let key = key.as_str()?;
        Some(
            self.known
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| JinjaValue::from(placeholder(&self.label, key))),
        )
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(
            self.known
                .iter()
                .map(|(k, _)| JinjaValue::from(k.as_str()))
                .collect(),
        )
    }
}

/// What the steps need from the target database. The engine implements it
/// on a SQL transaction; `render` on a simulation.
pub trait Executor {
    type Error: std::error::Error + Send + Sync + 'static;

    /// The first row of `table` whose columns equal `filter`.
    fn find(
        &mut self,
        table: &TableName,
        filter: &[(Ident, Value)],
    ) -> impl Future<Output = Result<Option<Row>, Self::Error>> + Send;

    /// `INSERT ... ON CONFLICT (key) DO UPDATE`, returning the row.
    fn upsert(
        &mut self,
        table: &TableName,
        key: &[Ident],
        values: &[(Ident, Value)],
    ) -> impl Future<Output = Result<Row, Self::Error>> + Send;

    /// Updates the rows matching `filter`, returning them.
    fn update(
        &mut self,
        table: &TableName,
        filter: &[(Ident, Value)],
        set: &[(Ident, Value)],
    ) -> impl Future<Output = Result<Vec<Row>, Self::Error>> + Send;

    /// Deletes the rows matching `filter`, returning how many.
    fn delete(
        &mut self,
        table: &TableName,
        filter: &[(Ident, Value)],
    ) -> impl Future<Output = Result<u64, Self::Error>> + Send;

    /// Publishes a new event (from the integration's target product).
    fn emit(
        &mut self,
        step: &Step,
        event: &str,
        data: Value,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// How a route ended when nothing failed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum RouteOutcome {
    /// Every step ran (or was passed over by its guard).
    Applied,
    /// The route does not apply to this event; nothing must be written.
    Skipped { reason: String },
}

/// What happened at one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Ran,
    /// Its `when` guard was false.
    PassedOver,
    /// No row matched, and `missing: null` went on.
    NoRow,
    /// No row matched, and `missing: skip` ended the route.
    SkippedRoute,
}

/// A record of one step, for `render`, `test` and debugging.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepTrace {
    pub index: usize,
    pub keyword: &'static str,
    /// The table, or for `emit` the event name.
    pub target: String,
    pub status: StepStatus,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub key: Vec<String>,
    #[serde(rename = "where", skip_serializing_if = "Vec::is_empty")]
    pub filter: Vec<(String, Value)>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<(String, Value)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row: Option<Row>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affected: Option<u64>,
}

/// Why a route failed.
#[derive(Debug)]
pub enum RouteError<E> {
    /// A value or guard could not be computed (permanent).
    Mapping {
        step: Option<usize>,
        what: String,
        column: Option<String>,
        error: MappingError,
    },
    /// No row matched and the step says `missing: fail` (permanent).
    MissingRow {
        step: usize,
        what: String,
        message: String,
    },
    /// The database refused or failed; the executor's error says whether
    /// a retry can help.
    Executor { step: usize, what: String, error: E },
}

impl<E> RouteError<E> {
    /// The 0-based step the error happened at (`None`: the route's guard).
    pub fn step(&self) -> Option<usize> {
        match self {
            RouteError::Mapping { step, .. } => *step,
            RouteError::MissingRow { step, .. } | RouteError::Executor { step, .. } => Some(*step),
        }
    }
}

impl<E: fmt::Display> fmt::Display for RouteError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteError::Mapping {
                step,
                what,
                column,
                error,
            } => {
                match step {
                    Some(step) => write!(f, "step {} ({what})", step + 1)?,
                    None => write!(f, "route guard")?,
                }
                if let Some(column) = column {
                    write!(f, ", `{column}`")?;
                }
                write!(f, ": {error}")
            }
            RouteError::MissingRow {
                step,
                what,
                message,
            } => {
                write!(f, "step {} ({what}): {message}", step + 1)
            }
            RouteError::Executor { step, what, error } => {
                write!(f, "step {} ({what}): {error}", step + 1)
            }
        }
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for RouteError<E> {}

/// A route's outcome and the trace of the steps that ran.
#[derive(Debug)]
pub struct RouteRun<E> {
    pub outcome: Result<RouteOutcome, RouteError<E>>,
    pub trace: Vec<StepTrace>,
}

fn describe_filter(filter: &[(Ident, Value)]) -> String {
    filter
        .iter()
        .map(|(column, value)| format!("{column} = {value}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs one route for one event. A `Skipped` outcome or an error means the
/// caller must discard every write the executor made (roll back).
pub async fn run_route<X: Executor>(
    route: &Route,
    templates: &TemplateSet,
    event: &EventInput,
    executor: &mut X,
) -> RouteRun<X::Error> {
    let mut trace = Vec::with_capacity(route.steps.len());
    let outcome = run_steps(route, templates, event, executor, &mut trace).await;
    RouteRun { outcome, trace }
}

async fn run_steps<X: Executor>(
    route: &Route,
    templates: &TemplateSet,
    event: &EventInput,
    executor: &mut X,
    trace: &mut Vec<StepTrace>,
) -> Result<RouteOutcome, RouteError<X::Error>> {
    let mut scope = Scope::new(templates, event);
    if let Some(guard) = &route.when {
        let pass = scope.test(guard).map_err(|error| RouteError::Mapping {
            step: None,
            what: "when".into(),
            column: None,
            error,
        })?;
        if !pass {
            return Ok(RouteOutcome::Skipped {
                reason: format!("the route's guard `{}` is false", guard_source(guard)),
            });
        }
    }
    for step in &route.steps {
        // Described only when something goes wrong: the happy path makes
        // no string per step.
        let what = || describe_step(step);
        let mapping_error = |column: Option<&str>, error: MappingError| RouteError::Mapping {
            step: Some(step.index),
            what: what(),
            column: column.map(str::to_owned),
            error,
        };
        let mut record = StepTrace {
            index: step.index,
            keyword: step.kind.keyword(),
            target: match &step.kind {
                StepKind::Emit { event, .. } => event.clone(),
                kind => kind.table().map(ToString::to_string).unwrap_or_default(),
            },
            status: StepStatus::Ran,
            key: Vec::new(),
            filter: Vec::new(),
            values: Vec::new(),
            data: None,
            bind: step.bind.clone(),
            row: None,
            affected: None,
        };
        if let Some(guard) = &step.when
            && !scope
                .test(guard)
                .map_err(|e| mapping_error(Some("when"), e))?
        {
            record.status = StepStatus::PassedOver;
            if let Some(name) = &step.bind {
                scope.bind(name, JinjaValue::from(()));
            }
            trace.push(record);
            continue;
        }
        let eval_columns =
            |columns: &Columns| -> Result<Vec<(Ident, Value)>, RouteError<X::Error>> {
                columns
                    .iter()
                    .map(|(column, expr)| {
                        scope
                            .eval(expr)
                            .map(|value| (column.clone(), value))
                            .map_err(|e| mapping_error(Some(column.as_str()), e))
                    })
                    .collect()
            };
        let executor_error = |error| RouteError::Executor {
            step: step.index,
            what: what(),
            error,
        };
        let mut bound: Option<Option<Row>> = None;
        let mut missing_rule = None;
        let mut filter_for_message = Vec::new();
        match &step.kind {
            StepKind::Find {
                table,
                filter,
                missing,
            } => {
                let filter = eval_columns(filter)?;
                let row = executor
                    .find(table, &filter)
                    .await
                    .map_err(executor_error)?;
                if row.is_none() {
                    missing_rule = Some(*missing);
                }
                bound = Some(row);
                filter_for_message = filter.clone();
                record.filter = named(filter);
            }
            StepKind::Upsert { table, key, values } => {
                let values = eval_columns(values)?;
                let row = executor
                    .upsert(table, key, &values)
                    .await
                    .map_err(executor_error)?;
                record.key = key.iter().map(|k| k.as_str().to_owned()).collect();
                record.values = named(values);
                bound = Some(Some(row));
            }
            StepKind::Update {
                table,
                filter,
                set,
                missing,
            } => {
                let filter = eval_columns(filter)?;
                let set = eval_columns(set)?;
                let rows = executor
                    .update(table, &filter, &set)
                    .await
                    .map_err(executor_error)?;
                record.affected = Some(rows.len() as u64);
                if rows.is_empty() {
                    missing_rule = Some(*missing);
                }
                filter_for_message = filter.clone();
                record.filter = named(filter);
                record.values = named(set);
                bound = Some(rows.into_iter().next());
            }
            StepKind::Delete {
                table,
                filter,
                missing,
            } => {
                let filter = eval_columns(filter)?;
                let count = executor
                    .delete(table, &filter)
                    .await
                    .map_err(executor_error)?;
                record.affected = Some(count);
                if count == 0 {
                    missing_rule = Some(*missing);
                }
                filter_for_message = filter.clone();
                record.filter = named(filter);
            }
            StepKind::Emit { event, data } => {
                let mut object = Map::with_capacity(data.len());
                for (key, expr) in data {
                    let value = scope.eval(expr).map_err(|e| mapping_error(Some(key), e))?;
                    object.insert(key.clone(), value);
                }
                let data = Value::Object(object);
                executor
                    .emit(step, event, data.clone())
                    .await
                    .map_err(executor_error)?;
                record.data = Some(data);
            }
        }
        if let Some(missing) = missing_rule {
            let message = format!(
                "no row in {} matches {}",
                step.kind
                    .table()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                describe_filter(&filter_for_message)
            );
            match missing {
                Missing::Skip => {
                    record.status = StepStatus::SkippedRoute;
                    trace.push(record);
                    return Ok(RouteOutcome::Skipped { reason: message });
                }
                Missing::Fail => {
                    trace.push(record);
                    return Err(RouteError::MissingRow {
                        step: step.index,
                        what: what(),
                        message,
                    });
                }
                Missing::Null => record.status = StepStatus::NoRow,
            }
        }
        if let Some(mut row) = bound {
            if let Some(name) = &step.bind {
                // A simulated row's placeholders are named after what the
                // templates call it: `⟨employee.id⟩`.
                if let Some(row) = row.as_mut().filter(|r| r.simulated.is_some()) {
                    row.simulated = Some(name.clone());
                }
                let value = row
                    .as_ref()
                    .map(Row::to_template_value)
                    .unwrap_or_else(|| JinjaValue::from(()));
                scope.bind(name, value);
            }
            record.row = row;
        }
        trace.push(record);
    }
    Ok(RouteOutcome::Applied)
}

fn named(columns: Vec<(Ident, Value)>) -> Vec<(String, Value)> {
    columns
        .into_iter()
        .map(|(column, value)| (column.as_str().to_owned(), value))
        .collect()
}

fn guard_source(guard: &crate::compile::Guard) -> String {
    match guard {
        crate::compile::Guard::Constant(value) => value.to_string(),
        crate::compile::Guard::Expression { source, .. } => source.clone(),
    }
}

/// `upsert hris.employees`, `emit employee.created`.
pub fn describe_step(step: &Step) -> String {
    match &step.kind {
        StepKind::Emit { event, .. } => format!("emit {event}"),
        kind => format!(
            "{} {}",
            kind.keyword(),
            kind.table().map(ToString::to_string).unwrap_or_default()
        ),
    }
}
