//! The original's JSON files, byte-compatible with Python's `json.dump` defaults.
//!
//! Python writes one line with `", "` between items and `": "` after keys, escapes every
//! character outside printable ASCII as `\uXXXX` (`ensure_ascii=True`, lowercase hex,
//! surrogate pairs above the BMP) and adds no trailing newline. The writers here produce exactly
//! those bytes, so a file read and written back is unchanged. The readers are strict about
//! shape (an array of strings, or an array of objects with string fields and no unknown keys)
//! and report the 0-based row of the first bad element.

use std::fs;
use std::path::Path;

use serde_json::Value;

use crate::DataError;

/// One element of `train.json`, `test.json` or a per-type file, as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The prompt, e.g. `<e_3><r_17>`.
    pub input_text: String,
    /// The prompt followed by the answer token, e.g. `<e_3><r_17><e_5>`.
    pub target_text: String,
    /// The fact type's name (`test.json` only), unvalidated.
    pub kind: Option<String>,
}

/// Appends `s` as a JSON string literal exactly as Python's `json.dumps(s)` spells it.
pub fn push_py_string(out: &mut String, s: &str) {
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            ' '..='~' => out.push(ch),
            _ => {
                let mut units = [0u16; 2];
                for unit in ch.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
}

/// A JSON array of strings as Python's `json.dump(list)` writes it (e.g. `vocab.json`).
pub fn strings_to_py_json(items: &[String]) -> String {
    let mut out = String::from("[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        push_py_string(&mut out, item);
    }
    out.push(']');
    out
}

/// A JSON array of rows as Python's `json.dump(list_of_dicts)` writes it, keys in the order
/// `input_text`, `target_text`, `type`.
pub fn rows_to_py_json(rows: &[Row]) -> String {
    let mut out = String::from("[");
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str("{\"input_text\": ");
        push_py_string(&mut out, &row.input_text);
        out.push_str(", \"target_text\": ");
        push_py_string(&mut out, &row.target_text);
        if let Some(kind) = &row.kind {
            out.push_str(", \"type\": ");
            push_py_string(&mut out, kind);
        }
        out.push('}');
    }
    out.push(']');
    out
}

fn read_array(path: &Path) -> Result<Vec<Value>, DataError> {
    let text = fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    parse_array(&text, path)
}

fn parse_array(text: &str, file: &Path) -> Result<Vec<Value>, DataError> {
    let value: Value = serde_json::from_str(text).map_err(|error| DataError::Json {
        file: file.to_path_buf(),
        error,
    })?;
    match value {
        Value::Array(items) => Ok(items),
        other => Err(DataError::file(
            file,
            format!("expected a JSON array, found {}", json_kind(&other)),
        )),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parses a JSON array of strings; `file` only labels errors.
///
/// # Errors
/// [`DataError::Json`] for invalid JSON, [`DataError::File`] when the top level is not an
/// array, [`DataError::Row`] for the first element that is not a string.
pub fn parse_strings(text: &str, file: &Path) -> Result<Vec<String>, DataError> {
    strings_from(parse_array(text, file)?, file)
}

/// Reads a JSON array of strings such as `vocab.json`; errors as [`parse_strings`], plus
/// [`DataError::Io`].
pub fn read_strings(path: &Path) -> Result<Vec<String>, DataError> {
    strings_from(read_array(path)?, path)
}

fn strings_from(items: Vec<Value>, file: &Path) -> Result<Vec<String>, DataError> {
    items
        .into_iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::String(s) => Ok(s),
            other => Err(DataError::row(
                file,
                i,
                other.to_string(),
                format!("expected a string, found {}", json_kind(&other)),
            )),
        })
        .collect()
}

/// Parses a JSON array of row objects; `file` only labels errors.
///
/// # Errors
/// [`DataError::Json`] for invalid JSON, [`DataError::File`] when the top level is not an
/// array, [`DataError::Row`] for the first element that is not an object with string fields
/// `input_text` and `target_text`, an optional string `type`, and nothing else.
pub fn parse_rows(text: &str, file: &Path) -> Result<Vec<Row>, DataError> {
    rows_from(parse_array(text, file)?, file)
}

/// Reads a JSON array of rows such as `train.json`; errors as [`parse_rows`], plus
/// [`DataError::Io`].
pub fn read_rows(path: &Path) -> Result<Vec<Row>, DataError> {
    rows_from(read_array(path)?, path)
}

fn rows_from(items: Vec<Value>, file: &Path) -> Result<Vec<Row>, DataError> {
    items
        .into_iter()
        .enumerate()
        .map(|(i, v)| row_from(i, v, file))
        .collect()
}

fn row_from(i: usize, value: Value, file: &Path) -> Result<Row, DataError> {
    let bad = |reason: String, v: &Value| DataError::row(file, i, v.to_string(), reason);
    let Value::Object(map) = &value else {
        return Err(bad(
            format!("expected an object, found {}", json_kind(&value)),
            &value,
        ));
    };
    if let Some(key) = map
        .keys()
        .find(|k| !matches!(k.as_str(), "input_text" | "target_text" | "type"))
    {
        return Err(bad(
            format!("unknown key {key:?} (expected input_text, target_text, type)"),
            &value,
        ));
    }
    let field = |key: &str| -> Result<Option<String>, DataError> {
        match map.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(bad(
                format!("{key} must be a string, found {}", json_kind(other)),
                &value,
            )),
        }
    };
    let required = |key: &str| -> Result<String, DataError> {
        field(key)?.ok_or_else(|| bad(format!("missing {key}"), &value))
    };
    Ok(Row {
        input_text: required("input_text")?,
        target_text: required("target_text")?,
        kind: field("type")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn py(s: &str) -> String {
        let mut out = String::new();
        push_py_string(&mut out, s);
        out
    }

    #[test]
    fn strings_are_escaped_like_python_ensure_ascii() {
        // Expected values are what `json.dumps` prints for the same strings.
        assert_eq!(py("<e_3><r_17>"), r#""<e_3><r_17>""#);
        assert_eq!(py("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(py("\n\r\t\u{8}\u{c}"), r#""\n\r\t\b\f""#);
        assert_eq!(py("\u{1}\u{1f}\u{7f}"), r#""\u0001\u001f\u007f""#);
        assert_eq!(py("é€"), r#""\u00e9\u20ac""#);
        assert_eq!(py("😀"), r#""\ud83d\ude00""#);
        assert_eq!(py("/ ~"), r#""/ ~""#);
    }

    #[test]
    fn arrays_use_python_separators_and_no_newline() {
        assert_eq!(strings_to_py_json(&[]), "[]");
        assert_eq!(
            strings_to_py_json(&["<e_0>".into(), "<f>".into()]),
            r#"["<e_0>", "<f>"]"#
        );
        let rows = [
            Row {
                input_text: "<e_0><f>".into(),
                target_text: "<e_0><f><e_2>".into(),
                kind: None,
            },
            Row {
                input_text: "<e_1><r_2>".into(),
                target_text: "<e_1><r_2><e_3>".into(),
                kind: Some("id_atomic".into()),
            },
        ];
        let text = rows_to_py_json(&rows);
        assert_eq!(
            text,
            r#"[{"input_text": "<e_0><f>", "target_text": "<e_0><f><e_2>"}, {"input_text": "<e_1><r_2>", "target_text": "<e_1><r_2><e_3>", "type": "id_atomic"}]"#
        );
        assert_eq!(parse_rows(&text, Path::new("x.json")).unwrap(), rows);
        assert_eq!(rows_to_py_json(&[]), "[]");
    }

    #[test]
    fn escaped_text_parses_back() {
        let odd = "q\"\\\n\u{7f}é😀".to_string();
        let text = strings_to_py_json(std::slice::from_ref(&odd));
        assert!(text.is_ascii());
        assert_eq!(parse_strings(&text, Path::new("v.json")).unwrap(), [odd]);
    }

    #[test]
    fn malformed_rows_name_their_row() {
        let f = Path::new("t.json");
        let cases = [
            r#"[{"input_text": "a", "target_text": "b"}, 3]"#,
            r#"[{"input_text": "a", "target_text": "b"}, {"input_text": "a"}]"#,
            r#"[{"input_text": "a", "target_text": "b"}, {"input_text": "a", "target_text": 1}]"#,
            r#"[{"input_text": "a", "target_text": "b"}, {"input_text": "a", "target_text": "b", "extra": "c"}]"#,
            r#"[{"input_text": "a", "target_text": "b"}, {"input_text": "a", "target_text": "b", "type": null}]"#,
        ];
        for case in cases {
            match parse_rows(case, f) {
                Err(DataError::Row { row: 1, file, .. }) => assert_eq!(file, f),
                other => panic!("{case}: {other:?}"),
            }
        }
        assert!(matches!(
            parse_rows("{\"a\": 1}", f),
            Err(DataError::File { .. })
        ));
        assert!(matches!(parse_rows("[{", f), Err(DataError::Json { .. })));
        assert!(matches!(
            parse_strings(r#"["a", 2]"#, f),
            Err(DataError::Row { row: 1, .. })
        ));
    }
}
