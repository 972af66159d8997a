//! One HTTP attempt against the W&B API and its classification for the retry policy.

use std::time::Duration;

use reqwest::blocking::Client;
use reqwest::redirect::Policy;
use reqwest::{StatusCode, Url};

use crate::error::WandbError;
use crate::options::ClientOptions;
use crate::rng::SmallRng;

/// Which endpoint a request targets, for messages.
pub(crate) type Endpoint = &'static str;

/// The result of one attempt.
#[derive(Debug)]
pub(crate) enum Attempt {
    /// 2xx with its body.
    Success(String),
    /// Connection error, timeout, 408, 429 or 5xx; `retry_after` from the header when present.
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Any other status: retrying cannot help.
    Fatal { status: u16, body: String },
}

/// The HTTP client bound to one base URL and key.
pub(crate) struct Transport {
    client: Client,
    base: Url,
    api_key: String,
}

impl Transport {
    /// Builds the client. Redirects are followed only within the base URL's host (and port), so
    /// the key, sent as Basic auth, never leaves it; no proxy is used when `no_proxy` is set.
    pub(crate) fn new(
        base_url: &str,
        api_key: &str,
        options: &ClientOptions,
        no_proxy: bool,
    ) -> Result<Transport, WandbError> {
        let base = Url::parse(base_url).map_err(|e| WandbError::InvalidSetting {
            key: "WANDB_BASE_URL".to_owned(),
            value: base_url.to_owned(),
            expected: format!("an absolute URL ({e})"),
        })?;
        let origin = base.origin();
        let policy = Policy::custom(move |attempt| {
            if attempt.previous().len() >= 5 || attempt.url().origin() != origin {
                attempt.stop()
            } else {
                attempt.follow()
            }
        });
        let mut builder = Client::builder()
            .redirect(policy)
            .connect_timeout(options.connect_timeout)
            .timeout(options.request_timeout)
            .user_agent(concat!("wandb-http-rs/", env!("CARGO_PKG_VERSION")));
        if no_proxy {
            builder = builder.no_proxy();
        }
        let client = builder
            .build()
            .map_err(|e| WandbError::Client(e.to_string()))?;
        Ok(Transport {
            client,
            base,
            api_key: api_key.to_owned(),
        })
    }

    /// `{base}/{segments...}`, each segment percent-encoded.
    pub(crate) fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// POSTs a JSON body once, with at most `timeout` for the whole exchange.
    pub(crate) fn post(&self, url: &Url, body: String, timeout: Duration) -> Attempt {
        let response = self
            .client
            .post(url.clone())
            .basic_auth("api", Some(&self.api_key))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .timeout(timeout)
            .body(body)
            .send();
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                return Attempt::Retry {
                    reason: error_chain(&e),
                    retry_after: None,
                };
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let text = match response.text() {
            Ok(t) => t,
            Err(e) => {
                return Attempt::Retry {
                    reason: format!("reading the body of HTTP {status}: {}", error_chain(&e)),
                    retry_after,
                };
            }
        };
        classify(status, text, retry_after)
    }
}

fn classify(status: StatusCode, body: String, retry_after: Option<Duration>) -> Attempt {
    if status.is_success() {
        Attempt::Success(body)
    } else if status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
    {
        Attempt::Retry {
            reason: format!("HTTP {}: {}", status.as_u16(), snippet(&body)),
            retry_after,
        }
    } else {
        Attempt::Fatal {
            status: status.as_u16(),
            body: snippet(&body),
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// The first 300 characters of a body, for messages.
pub(crate) fn snippet(body: &str) -> String {
    body.chars().take(300).collect()
}

/// `Retry-After` in (possibly fractional) seconds; the HTTP-date form is ignored and the normal
/// backoff applies instead.
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(86_400.0)))
}

/// The wait before retry number `attempt` (0 for the first retry): `min · 2^attempt` capped at
/// `max`, scaled by a jitter factor in `[0.5, 1.0)` so many clients do not retry in lockstep.
pub(crate) fn backoff(attempt: u32, min: Duration, max: Duration, rng: &mut SmallRng) -> Duration {
    let exp = min.saturating_mul(1u32 << attempt.min(20)).min(max);
    exp.mul_f64(0.5 + 0.5 * rng.next_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_parses_seconds_only() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after(" 0.25 "),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn backoff_doubles_within_jitter_and_is_capped() {
        let mut rng = SmallRng::from_entropy();
        let min = Duration::from_millis(100);
        let max = Duration::from_millis(1000);
        for attempt in 0..10 {
            let nominal = (100u64 << attempt).min(1000);
            let w = backoff(attempt, min, max, &mut rng).as_secs_f64() * 1000.0;
            assert!(
                w >= nominal as f64 * 0.5 - 1e-6 && w < nominal as f64,
                "attempt {attempt}: {w} ms"
            );
        }
        assert!(backoff(40, min, max, &mut rng) <= max);
    }

    #[test]
    fn statuses_are_classified_per_the_protocol() {
        let retry = |code: u16| {
            matches!(
                classify(StatusCode::from_u16(code).unwrap(), String::new(), None),
                Attempt::Retry { .. }
            )
        };
        for code in [408, 429, 500, 502, 503, 504] {
            assert!(retry(code), "{code} should be retried");
        }
        for code in [400, 401, 403, 404, 409] {
            assert!(!retry(code), "{code} should not be retried");
        }
        assert!(
            matches!(classify(StatusCode::OK, "x".into(), None), Attempt::Success(b) if b == "x")
        );
    }
}
