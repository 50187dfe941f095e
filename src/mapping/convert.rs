//! Conversions between JSON values (events, rows) and minijinja values
//! (template context and results).

use std::collections::BTreeMap;

use minijinja::value::{Value as JinjaValue, ValueKind};
use serde_json::{Map, Number, Value};

/// A JSON value as a template sees it.
pub fn from_json(value: &Value) -> JinjaValue {
    match value {
        Value::Null => JinjaValue::from(()),
        Value::Bool(b) => JinjaValue::from(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                JinjaValue::from(i)
            } else if let Some(u) = n.as_u64() {
                JinjaValue::from(u)
            } else {
                JinjaValue::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => JinjaValue::from(s.as_str()),
        Value::Array(items) => JinjaValue::from(items.iter().map(from_json).collect::<Vec<_>>()),
        Value::Object(map) => JinjaValue::from(
            map.iter()
                .map(|(k, v)| (k.clone(), from_json(v)))
                .collect::<BTreeMap<String, JinjaValue>>(),
        ),
    }
}

/// A template result as JSON. Fails for values JSON cannot hold
/// (undefined, functions, NaN).
pub fn to_json(value: &JinjaValue) -> Result<Value, String> {
    Ok(match value.kind() {
        ValueKind::Undefined => return Err("the value is undefined".into()),
        ValueKind::None => Value::Null,
        ValueKind::Bool => Value::Bool(value.is_true()),
        ValueKind::Number => {
            if let Some(i) = value.as_i64() {
                Value::Number(i.into())
            } else if let Ok(u) = u64::try_from(value.clone()) {
                Value::Number(u.into())
            } else {
                let f = f64::try_from(value.clone()).map_err(|e| e.to_string())?;
                Value::Number(
                    Number::from_f64(f).ok_or_else(|| format!("{f} has no JSON representation"))?,
                )
            }
        }
        ValueKind::String => Value::String(value.as_str().unwrap_or_default().to_owned()),
        ValueKind::Bytes => {
            return Err("bytes have no JSON representation".into());
        }
        ValueKind::Seq | ValueKind::Iterable => Value::Array(
            value
                .try_iter()
                .map_err(|e| e.to_string())?
                .map(|item| to_json(&item))
                .collect::<Result<_, _>>()?,
        ),
        ValueKind::Map => {
            let mut map = Map::new();
            for key in value.try_iter().map_err(|e| e.to_string())? {
                let item = value.get_item(&key).map_err(|e| e.to_string())?;
                let key = match key.as_str() {
                    Some(s) => s.to_owned(),
                    None => key.to_string(),
                };
                map.insert(key, to_json(&item)?);
            }
            Value::Object(map)
        }
        ValueKind::Plain | ValueKind::Invalid => {
            return Err(format!("`{value}` has no JSON representation"));
        }
        _ => return Err(format!("`{value}` has no JSON representation")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_survives_a_round_trip_through_templates() {
        let value =
            json!({"a": [1, 2.5, "x", null, true], "b": {"c": -3}, "big": 18446744073709551615u64});
        assert_eq!(to_json(&from_json(&value)).unwrap(), value);
    }

    #[test]
    fn undefined_is_refused() {
        assert!(to_json(&JinjaValue::UNDEFINED).is_err());
    }
}

/// A lazy template view of a JSON node: nothing is converted until a
/// template reads it, and then only the nodes on the way.
#[derive(Debug)]
pub struct JsonView {
    root: std::sync::Arc<Value>,
    path: Vec<PathSeg>,
}

#[derive(Debug, Clone)]
enum PathSeg {
    Key(String),
    Index(usize),
}

impl JsonView {
    fn node(&self) -> &Value {
        let mut node = &*self.root;
        for seg in &self.path {
            node = match (seg, node) {
                (PathSeg::Key(k), Value::Object(m)) => &m[k.as_str()],
                (PathSeg::Index(i), Value::Array(a)) => &a[*i],
                _ => unreachable!(),
            };
        }
        node
    }

    fn child(&self, seg: PathSeg, value: &Value) -> JinjaValue {
        match value {
            Value::Object(_) | Value::Array(_) => {
                let mut path = Vec::with_capacity(self.path.len() + 1);
                path.extend(self.path.iter().cloned());
                path.push(seg);
                JinjaValue::from_object(JsonView {
                    root: self.root.clone(),
                    path,
                })
            }
            scalar => from_json(scalar),
        }
    }
}

/// The lazy view of `root` itself.
pub fn view(root: std::sync::Arc<Value>) -> JinjaValue {
    match &*root {
        Value::Object(_) | Value::Array(_) => JinjaValue::from_object(JsonView {
            root,
            path: Vec::new(),
        }),
        scalar => from_json(scalar),
    }
}

/// The lazy view of `root[key]`.
pub fn view_key(root: std::sync::Arc<Value>, key: &str) -> JinjaValue {
    let top = JsonView {
        root,
        path: Vec::new(),
    };
    match top.root.get(key) {
        Some(v) => top.child(PathSeg::Key(key.to_owned()), v),
        None => JinjaValue::from(()),
    }
}

impl minijinja::value::Object for JsonView {
    fn repr(self: &std::sync::Arc<Self>) -> minijinja::value::ObjectRepr {
        match self.node() {
            Value::Array(_) => minijinja::value::ObjectRepr::Seq,
            _ => minijinja::value::ObjectRepr::Map,
        }
    }

    fn get_value(self: &std::sync::Arc<Self>, key: &JinjaValue) -> Option<JinjaValue> {
        match self.node() {
            Value::Object(map) => {
                let k = key.as_str()?;
                let (k, v) = map.get_key_value(k)?;
                Some(self.child(PathSeg::Key(k.clone()), v))
            }
            Value::Array(items) => {
                let i = key.as_usize()?;
                items.get(i).map(|v| self.child(PathSeg::Index(i), v))
            }
            _ => None,
        }
    }

    fn enumerate(self: &std::sync::Arc<Self>) -> minijinja::value::Enumerator {
        match self.node() {
            Value::Object(map) => minijinja::value::Enumerator::Values(
                map.keys().map(|k| JinjaValue::from(k.as_str())).collect(),
            ),
            Value::Array(items) => minijinja::value::Enumerator::Seq(items.len()),
            _ => minijinja::value::Enumerator::Empty,
        }
    }
}
