//! Conversions between JSON values (events, rows) and minijinja values
//! (template context and results).
//!
//! Numbers: JSON numbers keep the digits they were sent with; minijinja
//! computes with integers up to 128 bits and 64-bit floats. So whole
//! numbers enter templates exactly (up to 128 bits), and other numbers as
//! the nearest float, which is what arithmetic and comparisons in a
//! template work with. A template that only looks a number up
//! (`{{ data.amount }}`, a [`crate::compile::template::Lookup`]) gives the
//! JSON number itself, every digit kept ([`crate::mapping::Scope::eval`]).
//!
//! A leaf below `compile` (template results become JSON) and `mapping`
//! (events become template context): it uses nothing of busbar's but
//! `decimal`, and must never use either of them.

use std::collections::BTreeMap;

use minijinja::value::{Value as JinjaValue, ValueKind};
use serde_json::{Map, Number, Value};

use crate::decimal::Decimal;

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
            } else if let Some(i) = n.as_i128() {
                JinjaValue::from(i)
            } else if let Some(u) = n.as_u128() {
                JinjaValue::from(u)
            } else {
                // The nearest float: infinite or 0 beyond a double's range.
                JinjaValue::from(Decimal::of(n).to_f64())
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
            } else if let Some(n) = i128::try_from(value.clone())
                .ok()
                .and_then(Number::from_i128)
            {
                Value::Number(n)
            } else if let Some(n) = u128::try_from(value.clone())
                .ok()
                .and_then(Number::from_u128)
            {
                Value::Number(n)
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
    fn whole_numbers_up_to_128_bits_are_exact_in_templates() {
        let value: Value = serde_json::from_str(
            "[18446744073709551617, -170141183460469231731687303715884105728]",
        )
        .unwrap();
        let template = from_json(&value);
        assert_eq!(to_json(&template).unwrap(), value);
        let env = minijinja::Environment::new();
        let sum = env
            .compile_expression("n + 1")
            .unwrap()
            .eval(minijinja::context! { n => from_json(&value[0]) })
            .unwrap();
        assert_eq!(to_json(&sum).unwrap().to_string(), "18446744073709551618");
    }

    #[test]
    fn other_numbers_are_the_nearest_float_in_templates() {
        let value: Value = serde_json::from_str("[0.1, 1e400, 1e-400]").unwrap();
        let template = from_json(&value);
        assert_eq!(
            template.get_item_by_index(0).unwrap(),
            JinjaValue::from(0.1)
        );
        assert_eq!(
            template.get_item_by_index(1).unwrap(),
            JinjaValue::from(f64::INFINITY)
        );
        assert_eq!(
            template.get_item_by_index(2).unwrap(),
            JinjaValue::from(0.0)
        );
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
    /// The JSON node this view shows.
    pub fn node(&self) -> &Value {
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
