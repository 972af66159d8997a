//! Keeps the API key out of everything the client prints or returns.
//!
//! A server (or a proxy in front of it) may quote the request in an error body, `Authorization`
//! header included; reqwest error chains are printed as they are. Every such text goes through a
//! [`Redactor`] before it reaches a [`crate::WandbError`], a `tracing` event or a
//! [`crate::FinishReport`].

/// What replaces a secret.
pub(crate) const REDACTED: &str = "<redacted>";

/// Replaces the API key, its Basic-auth forms and any `Authorization` value with [`REDACTED`].
#[derive(Clone, Default)]
pub(crate) struct Redactor {
    /// Literal secrets, longest first so a secret containing another is replaced whole.
    secrets: Vec<String>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} secrets)", self.secrets.len())
    }
}

impl Redactor {
    /// A redactor for `api_key`: the key itself and `base64("api:" + key)` in the standard and
    /// URL-safe alphabets, unpadded (so the padded form is covered too) and with `/` escaped as
    /// JSON may write it.
    pub(crate) fn new(api_key: &str) -> Redactor {
        let mut secrets = Vec::new();
        let key = api_key.trim();
        if !key.is_empty() {
            secrets.push(key.to_owned());
            let standard = base64(format!("api:{key}").as_bytes());
            let standard = standard.trim_end_matches('=').to_owned();
            let url_safe = standard.replace('+', "-").replace('/', "_");
            let json_escaped = standard.replace('/', "\\/");
            secrets.extend([standard, url_safe, json_escaped]);
        }
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Redactor { secrets }
    }

    /// `text` with every `Authorization` value and every secret replaced by [`REDACTED`].
    pub(crate) fn redact(&self, text: &str) -> String {
        let mut out = redact_authorization(text);
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), REDACTED);
            }
        }
        out
    }
}

/// Replaces the value after every `authorization` (any case, so `Proxy-Authorization` too)
/// followed by `:` or `=` — as in an echoed header line, a JSON field or a query string — up to
/// the end of the line, or of the quoted string when the value is quoted.
pub(crate) fn redact_authorization(text: &str) -> String {
    const NAME: &str = "authorization";
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut search = 0;
    while let Some(found) = lower[search..].find(NAME) {
        let name_end = search + found + NAME.len();
        search = name_end;
        let bytes = text.as_bytes();
        // The separator: quotes, backslashes (escaped JSON) and blanks around one ':' or '='.
        let mut i = name_end;
        let mut separated = false;
        let mut quote = None;
        while i < bytes.len() {
            match bytes[i] {
                b':' | b'=' if !separated => separated = true,
                b'"' | b'\'' => quote = Some(bytes[i]),
                b' ' | b'\t' | b'\\' => {}
                _ => break,
            }
            i += 1;
        }
        if !separated {
            continue;
        }
        let value_start = i;
        let mut end = value_start;
        while end < bytes.len() {
            let b = bytes[end];
            let stop = match quote {
                Some(q) => b == q || b == b'\\' || b == b'\r' || b == b'\n',
                None => matches!(b, b'\r' | b'\n' | b'"' | b'\'' | b'\\' | b',' | b';' | b'&'),
            };
            if stop {
                break;
            }
            end += 1;
        }
        if end > value_start {
            out.push_str(&text[copied..value_start]);
            out.push_str(REDACTED);
            copied = end;
        }
        search = end.max(search);
    }
    out.push_str(&text[copied..]);
    out
}

/// Standard base64 with padding (RFC 4648), as HTTP Basic auth uses it.
pub(crate) fn base64(input: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(input)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn key_and_its_basic_auth_forms_are_redacted() {
        let r = Redactor::new(KEY);
        let b64 = base64(format!("api:{KEY}").as_bytes());
        let text = format!(
            "bad key {KEY}; header Basic {b64}; unpadded {}; url-safe {}; escaped {}",
            b64.trim_end_matches('='),
            b64.replace('+', "-").replace('/', "_"),
            b64.replace('/', "\\/"),
        );
        let out = r.redact(&text);
        assert!(!out.contains(KEY), "{out}");
        assert!(!out.contains(b64.trim_end_matches('=')), "{out}");
        assert!(
            out.starts_with("bad key <redacted>; header Basic <redacted>"),
            "{out}"
        );
    }

    #[test]
    fn authorization_values_are_redacted_in_headers_json_and_queries() {
        let cases = [
            (
                "POST /graphql\nauthorization: Bearer tok-1\nhost: x\n",
                "POST /graphql\nauthorization: <redacted>\nhost: x\n",
            ),
            (
                r#"{"headers":{"Authorization": "Basic abc=="},"x":1}"#,
                r#"{"headers":{"Authorization": "<redacted>"},"x":1}"#,
            ),
            (
                r#"{"body":"{\"authorization\":\"Basic abc\"}"}"#,
                r#"{"body":"{\"authorization\":\"<redacted>\"}"}"#,
            ),
            (
                "Proxy-Authorization: Basic zzz\r\nnext",
                "Proxy-Authorization: <redacted>\r\nnext",
            ),
            ("?authorization=secret&b=1", "?authorization=<redacted>&b=1"),
            (
                "missing authorization header",
                "missing authorization header",
            ),
            ("AUTHORIZATION:", "AUTHORIZATION:"),
        ];
        for (text, expected) in cases {
            assert_eq!(redact_authorization(text), expected, "{text}");
        }
    }

    #[test]
    fn an_empty_key_redacts_only_authorization_values() {
        let r = Redactor::new("");
        assert_eq!(r.redact("plain text"), "plain text");
        assert_eq!(format!("{r:?}"), "Redactor(0 secrets)");
    }
}
