//! The typed model of an integration file, deserialized from the JSON value
//! once the schema has accepted it.
//!
//! Value expressions stay `serde_json::Value` here: what they mean (a path,
//! a template, a literal) is the compiler's business, and keeping the raw
//! value lets it report positions by JSON pointer.

use serde::Deserialize;
use serde_json::{Map, Value};

/// One integration file, as written.
///
/// Built leniently ([`IntegrationModel::lenient`]): a file with schema
/// errors still yields the parts that can be read, so the compiler can
/// report its template, name and contract problems in the same run.
#[derive(Debug, Clone)]
pub struct IntegrationModel {
    pub id: Option<String>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
    pub source: String,
    pub target: String,
    pub retry: Option<RetryModel>,
    /// `order_by:` as written (a JSONPath string when valid).
    pub order_by: Option<Value>,
    /// `on_dead:` as written.
    pub on_dead: Option<String>,
    pub routes: Vec<RouteModel>,
}

/// `retry:` as written; durations are parsed by the compiler.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryModel {
    pub max_attempts: Option<u32>,
    pub initial: Option<String>,
    pub max: Option<String>,
}

/// One route as written.
#[derive(Debug, Clone)]
pub struct RouteModel {
    /// Position in the file's `routes` list.
    pub index: usize,
    pub on: String,
    /// The route's stable identity within its integration (`name:`).
    pub name: Option<String>,
    pub description: Option<String>,
    pub when: Option<Value>,
    /// Steps stay raw: their kind is decided by which key they carry.
    pub steps: Vec<Value>,
}

/// What `missing:` says to do when no row matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Missing {
    /// End the delivery as skipped; nothing is written.
    Skip,
    /// Dead-letter the delivery.
    Fail,
    /// Go on with the step's `as` name bound to null.
    #[default]
    Null,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FindModel {
    pub find: String,
    #[serde(rename = "where")]
    pub filter: Map<String, Value>,
    pub missing: Option<Missing>,
    #[serde(rename = "as")]
    pub bind: Option<String>,
    pub when: Option<Value>,
    pub description: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpsertModel {
    pub upsert: String,
    pub key: Vec<String>,
    pub values: Map<String, Value>,
    #[serde(rename = "as")]
    pub bind: Option<String>,
    pub when: Option<Value>,
    pub description: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateModel {
    pub update: String,
    #[serde(rename = "where")]
    pub filter: Map<String, Value>,
    pub set: Map<String, Value>,
    pub missing: Option<Missing>,
    #[serde(rename = "as")]
    pub bind: Option<String>,
    pub when: Option<Value>,
    pub description: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteModel {
    pub delete: String,
    #[serde(rename = "where")]
    pub filter: Map<String, Value>,
    pub missing: Option<Missing>,
    pub when: Option<Value>,
    pub description: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmitModel {
    pub emit: String,
    #[serde(default)]
    pub data: Map<String, Value>,
    pub when: Option<Value>,
    pub description: Option<String>,
}

/// One step as written, by kind.
#[derive(Debug, Clone)]
pub enum StepModel {
    Find(FindModel),
    Upsert(UpsertModel),
    Update(UpdateModel),
    Delete(DeleteModel),
    Emit(EmitModel),
}

fn string(value: Option<&Value>) -> Option<String> {
    value.and_then(Value::as_str).map(str::to_owned)
}

impl IntegrationModel {
    /// Reads what can be read: `None` only when `source`, `target` or
    /// `routes` are unusable. Routes that cannot be read are left out
    /// (the schema has reported why).
    pub fn lenient(value: &Value) -> Option<IntegrationModel> {
        let object = value.as_object()?;
        let routes = object
            .get("routes")?
            .as_array()?
            .iter()
            .enumerate()
            .filter_map(|(index, route)| RouteModel::lenient(index, route))
            .collect();
        Some(IntegrationModel {
            id: string(object.get("id")),
            description: string(object.get("description")),
            enabled: object.get("enabled").and_then(Value::as_bool),
            source: string(object.get("source"))?,
            target: string(object.get("target"))?,
            retry: object
                .get("retry")
                .and_then(|r| serde_json::from_value(r.clone()).ok()),
            order_by: object.get("order_by").cloned(),
            on_dead: string(object.get("on_dead")),
            routes,
        })
    }
}

impl RouteModel {
    fn lenient(index: usize, value: &Value) -> Option<RouteModel> {
        let object = value.as_object()?;
        Some(RouteModel {
            index,
            on: string(object.get("on"))?,
            name: string(object.get("name")),
            description: string(object.get("description")),
            when: object.get("when").cloned(),
            steps: object.get("steps")?.as_array()?.clone(),
        })
    }
}

/// A step's kind, named by the key that introduces it (`find: table`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKeyword {
    Find,
    Upsert,
    Update,
    Delete,
    Emit,
}

impl StepKeyword {
    /// Every kind, in the order a step's keys are looked at.
    pub const ALL: [StepKeyword; 5] = [
        StepKeyword::Find,
        StepKeyword::Upsert,
        StepKeyword::Update,
        StepKeyword::Delete,
        StepKeyword::Emit,
    ];

    /// The key that introduces a step of this kind.
    pub fn key(self) -> &'static str {
        match self {
            StepKeyword::Find => "find",
            StepKeyword::Upsert => "upsert",
            StepKeyword::Update => "update",
            StepKeyword::Delete => "delete",
            StepKeyword::Emit => "emit",
        }
    }

    /// The keys a step of this kind allows.
    fn allowed_keys(self) -> &'static [&'static str] {
        match self {
            StepKeyword::Find => &["find", "where", "missing", "as", "when", "description"],
            StepKeyword::Upsert => &["upsert", "key", "values", "as", "when", "description"],
            StepKeyword::Update => &[
                "update",
                "where",
                "set",
                "missing",
                "as",
                "when",
                "description",
            ],
            StepKeyword::Delete => &["delete", "where", "missing", "when", "description"],
            StepKeyword::Emit => &["emit", "data", "when", "description"],
        }
    }
}

impl StepModel {
    /// Reads a raw step by its kind key. Keys the kind does not allow are
    /// ignored here (the schema reports them); a step with no kind, or
    /// with values of the wrong type, is an error.
    pub fn from_value(value: &Value) -> Result<StepModel, serde_json::Error> {
        let kind = StepKeyword::ALL
            .into_iter()
            .find(|kind| value.get(kind.key()).is_some())
            .ok_or_else(|| {
                serde::de::Error::custom("a step needs one of find, upsert, update, delete, emit")
            })?;
        let mut value = value.clone();
        if let Value::Object(object) = &mut value {
            object.retain(|key, _| kind.allowed_keys().contains(&key.as_str()));
        }
        Ok(match kind {
            StepKeyword::Find => StepModel::Find(serde_json::from_value(value)?),
            StepKeyword::Upsert => StepModel::Upsert(serde_json::from_value(value)?),
            StepKeyword::Update => StepModel::Update(serde_json::from_value(value)?),
            StepKeyword::Delete => StepModel::Delete(serde_json::from_value(value)?),
            StepKeyword::Emit => StepModel::Emit(serde_json::from_value(value)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_step_kind_allows_its_own_key_and_drops_the_keys_of_others() {
        for kind in StepKeyword::ALL {
            assert!(kind.allowed_keys().contains(&kind.key()), "{kind:?}");
        }
        // `where` belongs to find, update and delete, not to emit: read
        // leniently, an emit step that has one is still an emit step.
        let step = json!({"emit": "candidate.hired", "data": {}, "where": {"id": "x"}});
        assert!(matches!(
            StepModel::from_value(&step),
            Ok(StepModel::Emit(_))
        ));
        assert!(StepModel::from_value(&json!({"as": "x"})).is_err());
    }
}
