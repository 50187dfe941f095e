//! JSON request and response bodies: [`Json`], the one way a handler reads
//! a body. On top of axum's checks (content type, size limit, syntax) it
//! refuses a body in which an object has the same key twice, at any depth.
//!
//! serde_json keeps the last of repeated keys without a word, so
//! `{"source": "recruitiq", "source": "evil"}` would be read one way by a
//! producer's own checks or a proxy and another way by busbar. RFC 8259
//! leaves such objects' meaning open; busbar refuses them (400
//! `duplicate-key`, naming each repeated key as a JSON pointer), as its
//! YAML loader does.
//!
//! The check is a second, value-less pass over the text
//! ([`duplicate_keys`]); the value itself is built by serde_json as usual,
//! so numbers keep whatever representation serde_json's features give them
//! (with or without `arbitrary_precision`).

use std::collections::HashSet;
use std::fmt::{self, Write as _};

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;
use serde::de::{self, DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Visitor};

use super::error::{ApiError, FieldError};

/// The most repeated keys listed in one answer.
const MAX_REPORTED: usize = 100;

/// A JSON body: read with duplicate keys refused and every rejection as
/// problem+json; written as `application/json`.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Json<T>, ApiError> {
        if !is_json(request.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "send the body as JSON with `Content-Type: application/json`",
            ));
        }
        let bytes = Bytes::from_request(request, state).await?;
        // Text that is not JSON fails here too; axum's parse below then
        // says why, in the same words as for any other malformed body.
        if let Ok(repeated) = duplicate_keys(&bytes)
            && !repeated.is_empty()
        {
            return Err(duplicate_key_error(repeated));
        }
        let axum::Json(value) = axum::Json::<T>::from_bytes(&bytes)?;
        Ok(Json(value))
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

/// `application/json`, or any `application/*+json`, as axum's own `Json`
/// accepts.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    let subtype = subtype.to_ascii_lowercase();
    kind.eq_ignore_ascii_case("application") && (subtype == "json" || subtype.ends_with("+json"))
}

fn duplicate_key_error(pointers: Vec<String>) -> ApiError {
    let errors = pointers
        .into_iter()
        .map(|pointer| {
            let key = pointer.rsplit('/').next().unwrap_or("").to_owned();
            FieldError {
                message: format!(
                    "the key `{}` appears more than once in this object; keys must be unique",
                    unescape(&key)
                ),
                pointer,
            }
        })
        .collect();
    ApiError::bad_request(
        "duplicate-key",
        "the body repeats a key within an object, so its meaning is ambiguous; nothing was stored",
    )
    .with_errors(errors)
}

/// The JSON pointers of every key that repeats an earlier key of the same
/// object, in document order (at most [`MAX_REPORTED`]). Fails when `text`
/// is not one JSON value.
pub fn duplicate_keys(text: &[u8]) -> Result<Vec<String>, serde_json::Error> {
    let mut found = Vec::new();
    let mut path = String::new();
    let mut deserializer = serde_json::Deserializer::from_slice(text);
    Node {
        path: &mut path,
        found: &mut found,
    }
    .deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(found)
}

/// One JSON value being checked: its pointer (a buffer shared by the whole
/// walk, grown and cut back around each child) and the repeats found.
struct Node<'a> {
    path: &'a mut String,
    found: &'a mut Vec<String>,
}

impl Node<'_> {
    fn child(&mut self) -> Node<'_> {
        Node {
            path: &mut *self.path,
            found: &mut *self.found,
        }
    }
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_i128<E>(self, _: i128) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u128<E>(self, _: u128) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let len = self.path.len();
        let mut index = 0usize;
        loop {
            self.path.truncate(len);
            let _ = write!(self.path, "/{index}");
            if seq.next_element_seed(self.child())?.is_none() {
                break;
            }
            index += 1;
        }
        self.path.truncate(len);
        Ok(())
    }

    // With serde_json's `arbitrary_precision`, a number arrives here as a
    // one-key map; one key never repeats, so it passes like any number.
    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let len = self.path.len();
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            self.path.truncate(len);
            self.path.push('/');
            escape_into(self.path, &key);
            if !seen.insert(key) && self.found.len() < MAX_REPORTED {
                self.found.push(self.path.clone());
            }
            map.next_value_seed(self.child())?;
        }
        self.path.truncate(len);
        Ok(())
    }
}

/// Appends `key` as a JSON pointer token (RFC 6901: `~` as `~0`, `/` as `~1`).
fn escape_into(path: &mut String, key: &str) {
    for c in key.chars() {
        match c {
            '~' => path.push_str("~0"),
            '/' => path.push_str("~1"),
            c => path.push(c),
        }
    }
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repeats(text: &str) -> Vec<String> {
        duplicate_keys(text.as_bytes()).expect("valid JSON")
    }

    #[test]
    fn repeated_keys_are_found_at_any_depth_with_their_pointers() {
        assert!(repeats(r#"{"a": 1, "b": {"a": 2}, "c": [{"a": 3}, {"a": 4}]}"#).is_empty());
        assert_eq!(
            repeats(r#"{"source": "recruitiq", "source": "evil"}"#),
            ["/source"]
        );
        assert_eq!(
            repeats(
                r#"{"data": {"x": {"y": 1, "y": 2}}, "events": [{}, {"id": 1, "id": 1, "id": 2}]}"#
            ),
            ["/data/x/y", "/events/1/id", "/events/1/id"]
        );
        // Keys are compared after unescaping, and written as pointer tokens.
        assert_eq!(repeats(r#"{"a": 1, "\u0061": 2}"#), ["/a"]);
        assert_eq!(repeats(r#"{"a/b~": 1, "a/b~": 2}"#), ["/a~1b~0"]);
        assert_eq!(unescape("a~1b~0"), "a/b~");
    }

    #[test]
    fn every_kind_of_value_is_walked_and_malformed_text_fails() {
        assert!(
            repeats(r#"[1, -2, 3.5, 1e300, 18446744073709551616, true, null, "s", [], {}]"#)
                .is_empty()
        );
        assert!(repeats("12345678901234567890123456789").is_empty());
        assert!(duplicate_keys(b"{\"a\": ").is_err());
        assert!(duplicate_keys(b"{} {}").is_err());
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(
            duplicate_keys(deep.as_bytes()).is_err(),
            "serde_json's depth limit holds"
        );
    }

    #[test]
    fn at_most_a_bounded_number_of_repeats_is_reported() {
        let body = format!("{{{}\"k\": 0}}", "\"k\": 0, ".repeat(500));
        assert_eq!(repeats(&body).len(), MAX_REPORTED);
    }

    #[test]
    fn json_content_types_are_recognised() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, value.parse().unwrap());
            is_json(&headers)
        };
        assert!(with("application/json"));
        assert!(with("application/json; charset=utf-8"));
        assert!(with("Application/JSON"));
        assert!(with("application/problem+json"));
        assert!(!with("text/plain"));
        assert!(!with("application/jsonx"));
        assert!(!with("json"));
        assert!(!is_json(&HeaderMap::new()));
    }
}
