//! History rows and their JSON encoding.
//!
//! # Non-finite floats
//! A `serde_json::Value` cannot hold NaN or ±∞ (it turns them into `null`), yet a diverging loss
//! is exactly what a dashboard must show. Values set with [`Row::set_f64`] therefore keep their
//! float, and a non-finite one is written as the bare tokens `NaN`, `Infinity` and `-Infinity`
//! inside the history/summary line — what the reference Python client writes, so W&B charts show
//! them as NaN/∞ instead of gaps. Each line is itself sent as a JSON *string*, so the request body
//! stays strict JSON. Non-finite values that went through `serde_json::Value` arrive as `null`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Map, Value};

/// One value of a row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Field {
    Json(Value),
    Float(f64),
}

/// The metrics logged at one step: flat keys such as `train/CE_last` to values.
///
/// Built from a `serde_json::Map` (`Row::from(map)`) or key by key; a later value for a key
/// replaces the earlier one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    pub(crate) fields: BTreeMap<String, Field>,
}

impl Row {
    /// An empty row.
    pub fn new() -> Row {
        Row::default()
    }

    /// Sets `key` to a JSON value.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<Value>) -> &mut Row {
        self.fields.insert(key.into(), Field::Json(value.into()));
        self
    }

    /// Sets `key` to a float, keeping NaN and ±∞ (see the module docs).
    pub fn set_f64(&mut self, key: impl Into<String>, value: f64) -> &mut Row {
        self.fields.insert(key.into(), Field::Float(value));
        self
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// True when no key is set.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Moves every key of `other` into `self`, `other` winning on conflicts.
    pub(crate) fn merge(&mut self, other: Row) {
        self.fields.extend(other.fields);
    }

    /// This row plus the `_step`, `_runtime` and `_timestamp` bookkeeping keys, as one JSON line.
    pub(crate) fn encode_with(&self, step: u64, runtime: f64, timestamp: f64) -> String {
        let mut full = self.fields.clone();
        full.insert("_step".to_owned(), Field::Json(Value::from(step)));
        full.insert("_runtime".to_owned(), Field::Float(runtime));
        full.insert("_timestamp".to_owned(), Field::Float(timestamp));
        encode_object(&full)
    }
}

impl From<Map<String, Value>> for Row {
    fn from(map: Map<String, Value>) -> Row {
        Row {
            fields: map.into_iter().map(|(k, v)| (k, Field::Json(v))).collect(),
        }
    }
}

impl<K: Into<String>> FromIterator<(K, f64)> for Row {
    fn from_iter<I: IntoIterator<Item = (K, f64)>>(iter: I) -> Row {
        Row {
            fields: iter
                .into_iter()
                .map(|(k, v)| (k.into(), Field::Float(v)))
                .collect(),
        }
    }
}

/// Encodes a map as one JSON object, floats per the module docs.
pub(crate) fn encode_object(fields: &BTreeMap<String, Field>) -> String {
    let mut out = String::from("{");
    for (i, (key, field)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&Value::String(key.clone()).to_string());
        out.push(':');
        match field {
            Field::Json(v) => out.push_str(&v.to_string()),
            Field::Float(x) => write_float(&mut out, *x),
        }
    }
    out.push('}');
    out
}

fn write_float(out: &mut String, x: f64) {
    if x.is_nan() {
        out.push_str("NaN");
    } else if x == f64::INFINITY {
        out.push_str("Infinity");
    } else if x == f64::NEG_INFINITY {
        out.push_str("-Infinity");
    } else {
        // serde_json prints the shortest round-tripping form and always keeps a `.0` or exponent,
        // so the value stays a float on the server.
        match serde_json::Number::from_f64(x) {
            Some(n) => {
                let _ = write!(out, "{n}");
            }
            None => out.push_str("null"),
        }
    }
}

/// Wraps every top-level key as `{"value": v}` and serialises the result to a string, the form
/// the upsert's `config` variable expects.
pub fn encode_config(config: &Map<String, Value>) -> String {
    let wrapped: Map<String, Value> = config
        .iter()
        .map(|(k, v)| {
            let mut inner = Map::new();
            inner.insert("value".to_owned(), v.clone());
            (k.clone(), Value::Object(inner))
        })
        .collect();
    Value::Object(wrapped).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn row_line_has_bookkeeping_keys_and_parses_back() {
        let mut row = Row::new();
        row.set_f64("train/CE_last", 0.25)
            .set("epoch", 3)
            .set("tag", "a\"b");
        let line = row.encode_with(7, 1.5, 1_700_000_000.25);
        let parsed: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            parsed,
            json!({"train/CE_last": 0.25, "epoch": 3, "tag": "a\"b", "_step": 7,
                   "_runtime": 1.5, "_timestamp": 1_700_000_000.25})
        );
        assert!(parsed["_step"].is_u64());
        assert!(parsed["_runtime"].is_f64());
    }

    #[test]
    fn non_finite_floats_become_bare_tokens() {
        let row: Row = [
            ("a", f64::NAN),
            ("b", f64::INFINITY),
            ("c", f64::NEG_INFINITY),
            ("d", 2.0),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            encode_object(&row.fields),
            r#"{"a":NaN,"b":Infinity,"c":-Infinity,"d":2.0}"#
        );
    }

    #[test]
    fn merge_lets_the_later_value_win() {
        let mut a: Row = [("x", 1.0), ("y", 2.0)].into_iter().collect();
        let b: Row = [("y", 3.0), ("z", 4.0)].into_iter().collect();
        a.merge(b);
        assert_eq!(encode_object(&a.fields), r#"{"x":1.0,"y":3.0,"z":4.0}"#);
    }

    #[test]
    fn config_is_wrapped_per_top_level_key_and_stringified() {
        let cfg = json!({"lr": 0.0001, "batch_size": 64, "sub": {"a": 1}});
        let Value::Object(map) = cfg else {
            unreachable!()
        };
        let s = encode_config(&map);
        let back: Value = serde_json::from_str(&s).unwrap();
        assert_eq!(
            back,
            json!({"lr": {"value": 0.0001}, "batch_size": {"value": 64}, "sub": {"value": {"a": 1}}})
        );
    }
}
