//! The typed model of an integration file, deserialized from the JSON value
//! once the schema has accepted it.
//!
//! Value expressions stay `serde_json::Value` here: what they mean (a path,
//! a template, a literal) is the compiler's business, and keeping the raw
//! value lets it report positions by JSON pointer.

use serde::Deserialize;
use serde_json::{Map, Value};

/// One integration file, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntegrationModel {
    pub id: Option<String>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
    pub source: String,
    pub target: String,
    pub retry: Option<RetryModel>,
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
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteModel {
    pub on: String,
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

impl StepModel {
    /// Reads a raw step; the schema has already checked that it has exactly
    /// one kind key and only the keys that kind allows.
    pub fn from_value(value: &Value) -> Result<StepModel, serde_json::Error> {
        let has = |key: &str| value.get(key).is_some();
        let value = value.clone();
        Ok(if has("find") {
            StepModel::Find(serde_json::from_value(value)?)
        } else if has("upsert") {
            StepModel::Upsert(serde_json::from_value(value)?)
        } else if has("update") {
            StepModel::Update(serde_json::from_value(value)?)
        } else if has("delete") {
            StepModel::Delete(serde_json::from_value(value)?)
        } else {
            StepModel::Emit(serde_json::from_value(value)?)
        })
    }
}
