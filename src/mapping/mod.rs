//! Evaluating routes: value expressions against an event, guards, and the
//! step loop shared by the engine, `render` and `test`.
//!
//! Pure: nothing here touches a database, a file or the network. Steps that
//! need the target database go through the [`Executor`] the caller passes
//! in — a SQL transaction in the engine, a simulation in `render`.

mod route;

use std::sync::Arc;

use minijinja::value::{Enumerator, Object, Value as JinjaValue};
use serde_json::{Map, Value};

use crate::compile::template::{Lookup, LookupStep, TemplateSet, describe_error};
use crate::compile::{Guard, ValueExpr};
use crate::envelope::Envelope;
use crate::jsonpath::MultipleMatches;
use crate::value;
pub use route::{
    Executor, RouteError, RouteOutcome, RouteRun, Row, StepStatus, StepTrace, describe_step,
    placeholder, run_route,
};

/// Why a value could not be computed. Every variant is permanent: the same
/// event and mapping would fail the same way on a retry.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MappingError {
    #[error("template `{template}` failed: {message}")]
    Template { template: String, message: String },
    #[error(transparent)]
    MultipleMatches(#[from] MultipleMatches),
    #[error("JSONPath `{path}` matched nothing, and it is marked `required`")]
    RequiredPath { path: String },
    #[error("template `{template}` gave a value that JSON cannot hold: {reason}")]
    NotJson { template: String, reason: String },
}

/// An event prepared for mapping: its JSON envelope, and the same as
/// template values, built once per event and shared by all its routes.
#[derive(Debug, Clone)]
pub struct EventInput {
    pub json: Arc<Value>,
    event: JinjaValue,
    data: JinjaValue,
}

impl EventInput {
    pub fn new(envelope: &Envelope) -> Self {
        EventInput::from_json(envelope.to_json())
    }

    /// From an envelope the caller no longer needs (no copy of `data`).
    pub fn from_envelope(envelope: Envelope) -> Self {
        EventInput::from_json(envelope.into_json())
    }

    /// From an envelope already in JSON form.
    pub fn from_json(json: Value) -> Self {
        let json = Arc::new(json);
        let event = value::view(json.clone());
        let data = value::view_key(json.clone(), "data");
        EventInput { json, event, data }
    }
}

/// The template context: `event`, `data` and the rows bound by `as`.
#[derive(Debug)]
struct Context {
    event: JinjaValue,
    data: JinjaValue,
    bindings: Vec<(String, JinjaValue)>,
}

impl Object for Context {
    fn get_value(self: &Arc<Self>, key: &JinjaValue) -> Option<JinjaValue> {
        match key.as_str()? {
            "event" => Some(self.event.clone()),
            "data" => Some(self.data.clone()),
            name => self
                .bindings
                .iter()
                .find(|(bound, _)| bound == name)
                .map(|(_, value)| value.clone()),
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        let mut keys: Vec<JinjaValue> = vec!["event".into(), "data".into()];
        keys.extend(
            self.bindings
                .iter()
                .map(|(name, _)| JinjaValue::from(name.as_str())),
        );
        Enumerator::Values(keys)
    }
}

/// What templates and paths can see at one point of a route.
pub struct Scope<'a> {
    templates: &'a TemplateSet,
    event: &'a EventInput,
    bindings: Vec<(String, JinjaValue)>,
    context: JinjaValue,
}

impl<'a> Scope<'a> {
    pub fn new(templates: &'a TemplateSet, event: &'a EventInput) -> Self {
        let mut scope = Scope {
            templates,
            event,
            bindings: Vec::new(),
            context: JinjaValue::UNDEFINED,
        };
        scope.rebuild();
        scope
    }

    fn rebuild(&mut self) {
        self.context = JinjaValue::from_object(Context {
            event: self.event.event.clone(),
            data: self.event.data.clone(),
            bindings: self.bindings.clone(),
        });
    }

    /// Makes `value` available to later templates as `name`.
    pub fn bind(&mut self, name: &str, value: JinjaValue) {
        self.bindings.retain(|(bound, _)| bound != name);
        self.bindings.push((name.to_owned(), value));
        self.rebuild();
    }

    /// Computes a value expression.
    pub fn eval(&self, expr: &ValueExpr) -> Result<Value, MappingError> {
        match expr {
            ValueExpr::Literal(value) => Ok(value.clone()),
            ValueExpr::Path {
                path,
                default,
                required,
            } => match path.query(&self.event.json)? {
                Some(value) => Ok(value.clone()),
                None if *required => Err(MappingError::RequiredPath {
                    path: path.as_str().to_owned(),
                }),
                None => Ok(default.clone().unwrap_or(Value::Null)),
            },
            ValueExpr::Template { id, source } => {
                let value = self.templates.eval(*id, &self.context).map_err(|error| {
                    MappingError::Template {
                        template: source.clone(),
                        message: describe_error(&error),
                    }
                })?;
                // A number a template only looked up is taken from the JSON
                // it came from, with every digit: in the template it was the
                // nearest float.
                if value.is_number()
                    && let Some(lookup) = self.templates.lookup(*id)
                    && let Some(number @ Value::Number(_)) = self.look_up(lookup)
                {
                    return Ok(number.clone());
                }
                value::to_json(&value).map_err(|reason| MappingError::NotJson {
                    template: source.clone(),
                    reason,
                })
            }
            ValueExpr::Object(entries) => {
                let mut map = Map::with_capacity(entries.len());
                for (key, value) in entries {
                    map.insert(key.clone(), self.eval(value)?);
                }
                Ok(Value::Object(map))
            }
            ValueExpr::Array(items) => items
                .iter()
                .map(|item| self.eval(item))
                .collect::<Result<_, _>>()
                .map(Value::Array),
        }
    }

    /// The JSON node a lookup reads, when its root is JSON (the event, or
    /// a row bound by `as`).
    fn look_up(&self, lookup: &Lookup) -> Option<&Value> {
        let root = match lookup.root.as_str() {
            "event" => &self.event.event,
            "data" => &self.event.data,
            name => {
                &self
                    .bindings
                    .iter()
                    .rev()
                    .find(|(bound, _)| bound == name)?
                    .1
            }
        };
        let mut node = root.downcast_object_ref::<value::JsonView>()?.node();
        for step in &lookup.steps {
            node = match (step, node) {
                (LookupStep::Key(key), Value::Object(map)) => map.get(key)?,
                (LookupStep::Index(index), Value::Array(items)) => items.get(*index)?,
                _ => return None,
            };
        }
        Some(node)
    }

    /// Tests a guard for truth.
    pub fn test(&self, guard: &Guard) -> Result<bool, MappingError> {
        match guard {
            Guard::Constant(value) => Ok(*value),
            Guard::Expression { id, source } => self
                .templates
                .eval(*id, &self.context)
                .map(|value| value.is_true())
                .map_err(|error| MappingError::Template {
                    template: source.clone(),
                    message: describe_error(&error),
                }),
        }
    }
}
