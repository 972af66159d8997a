//! One HTTP attempt against the W&B API and its classification for the retry policy.

use std::time::Duration;

use reqwest::blocking::Client;
use reqwest::redirect::Policy;
use reqwest::{StatusCode, Url};

use crate::error::WandbError;
use crate::options::ClientOptions;
use crate::redact::Redactor;
use crate::rng::SmallRng;
use crate::settings::without_userinfo;

/// Which endpoint a request targets, for messages.
pub(crate) type Endpoint = &'static str;

/// The result of one attempt. The texts of `Retry` and `Fatal` are already redacted.
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
    redactor: Redactor,
}

impl Transport {
    /// Builds the client. Redirects are followed only within the base URL's origin (scheme, host
    /// and port), so the key, sent as Basic auth, never leaves it; no proxy is used when
    /// `no_proxy` is set.
    pub(crate) fn new(
        base_url: &str,
        api_key: &str,
        options: &ClientOptions,
        no_proxy: bool,
    ) -> Result<Transport, WandbError> {
        let redactor = Redactor::new(api_key);
        let base = Url::parse(base_url).map_err(|e| WandbError::InvalidSetting {
            key: "WANDB_BASE_URL".to_owned(),
            value: without_userinfo(base_url),
            expected: format!("an absolute URL ({e})"),
        })?;
        if !base.username().is_empty() || base.password().is_some() {
            return Err(WandbError::InvalidSetting {
                key: "WANDB_BASE_URL".to_owned(),
                value: without_userinfo(base_url),
                expected: crate::settings::NO_USERINFO.to_owned(),
            });
        }
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
            .map_err(|e| WandbError::Client(redactor.redact(&error_chain(&e))))?;
        Ok(Transport {
            client,
            base,
            api_key: api_key.to_owned(),
            redactor,
        })
    }

    /// The redactor for this transport's key.
    pub(crate) fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// `{base}/{segments...}`, each segment percent-encoded, so names the server chose (entity,
    /// project) stay path segments and cannot change the host the key goes to.
    pub(crate) fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// POSTs a JSON body once, with at most `timeout` for the whole exchange. Only URLs on the
    /// base URL's origin are accepted (anything else is answered `Fatal` without a request), so
    /// the key is never sent elsewhere.
    pub(crate) fn post(&self, url: &Url, body: String, timeout: Duration) -> Attempt {
        if url.origin() != self.base.origin() {
            return Attempt::Fatal {
                status: 0,
                body: format!(
                    "refusing to send credentials to {} (not the base URL's host)",
                    self.redactor.redact(&without_userinfo(url.as_str()))
                ),
            };
        }
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
                    reason: self.redactor.redact(&error_chain(&e)),
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
                    reason: self.redactor.redact(&format!(
                        "reading the body of HTTP {status}: {}",
                        error_chain(&e)
                    )),
                    retry_after,
                };
            }
        };
        classify(status, text, retry_after, &self.redactor)
    }
}

/// Sorts an answer into success, retry or fatal; the texts of the last two are redacted.
fn classify(
    status: StatusCode,
    body: String,
    retry_after: Option<Duration>,
    redactor: &Redactor,
) -> Attempt {
    if status.is_success() {
        Attempt::Success(body)
    } else if status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
    {
        Attempt::Retry {
            reason: format!(
                "HTTP {}: {}",
                status.as_u16(),
                redacted_snippet(&body, redactor)
            ),
            retry_after,
        }
    } else {
        Attempt::Fatal {
            status: status.as_u16(),
            body: redacted_snippet(&body, redactor),
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

/// The first 300 characters of a body with secrets redacted. The whole body is redacted before
/// it is cut, so a secret straddling the cut cannot leave a readable prefix.
fn redacted_snippet(body: &str, redactor: &Redactor) -> String {
    snippet(&redactor.redact(body))
}

/// `Retry-After` in (possibly fractional) seconds; the HTTP-date form is ignored and the normal
/// backoff applies instead.
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(86_400.0)))
}

/// The wait before retry number `attempt` (0 for the first retry): `min · 2^attempt` capped at
/// `max`, scaled by a jitter factor in `[0.5, 1.0)` so many clients do not retry in lockstep, and
/// never below `min`.
pub(crate) fn backoff(attempt: u32, min: Duration, max: Duration, rng: &mut SmallRng) -> Duration {
    let max = max.max(min);
    let exp = min.saturating_mul(1u32 << attempt.min(20)).min(max);
    exp.mul_f64(0.5 + 0.5 * rng.next_f64()).max(min)
}

/// The wait after the `failures`-th consecutive failed attempt (0-based) before the next one:
/// the exponential [`backoff`], or the server's `Retry-After` when that is longer, capped at
/// [`ClientOptions::max_retry_wait`] and never below the floor
/// [`ClientOptions::min_retry_wait`] (at least 1 ms) — so `Retry-After: 0` cannot cause a storm.
pub(crate) fn retry_wait(
    failures: u32,
    retry_after: Option<Duration>,
    options: &ClientOptions,
    rng: &mut SmallRng,
) -> Duration {
    let floor = options.min_retry_wait.max(Duration::from_millis(1));
    let cap = options.max_retry_wait.max(floor);
    let computed = backoff(failures, floor, cap, rng);
    match retry_after {
        Some(asked) => asked.min(cap).max(computed),
        None => computed,
    }
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
    fn backoff_doubles_within_jitter_is_capped_and_never_below_the_minimum() {
        let mut rng = SmallRng::from_entropy();
        let min = Duration::from_millis(100);
        let max = Duration::from_millis(1000);
        for _ in 0..50 {
            for attempt in 0..10 {
                let nominal = (100u64 << attempt).min(1000) as f64;
                let w = backoff(attempt, min, max, &mut rng).as_secs_f64() * 1000.0;
                assert!(
                    w >= (nominal * 0.5).max(100.0) - 1e-6 && w <= nominal + 1e-6,
                    "attempt {attempt}: {w} ms"
                );
            }
        }
        assert!(backoff(40, min, max, &mut rng) <= max);
        assert_eq!(
            backoff(0, min, Duration::ZERO, &mut rng),
            min,
            "cap below floor"
        );
    }

    #[test]
    fn retry_after_never_undercuts_the_floor_nor_the_backoff() {
        let mut rng = SmallRng::from_entropy();
        let options = ClientOptions {
            min_retry_wait: Duration::from_millis(100),
            max_retry_wait: Duration::from_secs(2),
            ..ClientOptions::default()
        };
        let zero = Some(Duration::ZERO);
        for _ in 0..50 {
            assert!(retry_wait(0, zero, &options, &mut rng) >= Duration::from_millis(100));
            // After five straight failures the backoff (3.2 s capped at 2 s, jittered down to no
            // less than half) wins over `Retry-After: 0`.
            assert!(retry_wait(5, zero, &options, &mut rng) >= Duration::from_millis(1000));
        }
        let long = Some(Duration::from_millis(1500));
        assert_eq!(
            retry_wait(0, long, &options, &mut rng),
            Duration::from_millis(1500)
        );
        let huge = Some(Duration::from_secs(3600));
        assert_eq!(
            retry_wait(0, huge, &options, &mut rng),
            Duration::from_secs(2)
        );
        let zero_floor = ClientOptions {
            min_retry_wait: Duration::ZERO,
            ..options
        };
        assert!(retry_wait(0, zero, &zero_floor, &mut rng) >= Duration::from_millis(1));
        assert!(ClientOptions::default().min_retry_wait >= Duration::from_secs(1));
    }

    #[test]
    fn error_texts_are_redacted_before_they_are_cut() {
        let key = "k3y-0123456789abcdef";
        let redactor = Redactor::new(key);
        let body = format!(
            "{}{key} and Basic {}",
            "x".repeat(290),
            crate::redact::base64(format!("api:{key}").as_bytes())
        );
        for status in [400, 503] {
            let text = match classify(
                StatusCode::from_u16(status).unwrap(),
                body.clone(),
                None,
                &redactor,
            ) {
                Attempt::Retry { reason, .. } => reason,
                Attempt::Fatal { body, .. } => body,
                Attempt::Success(_) => unreachable!(),
            };
            assert!(!text.contains("k3y"), "{text}");
            assert!(
                text.ends_with("<redacted>") || text.contains("<redac"),
                "{text}"
            );
        }
    }

    #[test]
    fn urls_stay_on_the_base_origin_whatever_the_segments() {
        let t = Transport::new(
            "http://127.0.0.1:9/api",
            "key",
            &ClientOptions::default(),
            true,
        )
        .unwrap();
        for hostile in [
            "@evil.com",
            "..",
            "a/../../b",
            "x?y#z",
            "evil.com:80",
            "%2e%2e",
            "\\evil",
        ] {
            let url = t.url(&["files", hostile, "p", "file_stream"]);
            assert_eq!(url.origin(), t.base.origin(), "{hostile}: {url}");
            assert!(url.path().starts_with("/api/files/"), "{hostile}: {url}");
        }
        let elsewhere = Url::parse("http://127.0.0.1:10/graphql").unwrap();
        match t.post(&elsewhere, "{}".into(), Duration::from_millis(10)) {
            Attempt::Fatal { status: 0, body } => assert!(body.contains("refusing"), "{body}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn statuses_are_classified_per_the_protocol() {
        let r = Redactor::default();
        let retry = |code: u16| {
            matches!(
                classify(StatusCode::from_u16(code).unwrap(), String::new(), None, &r),
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
            matches!(classify(StatusCode::OK, "x".into(), None, &r), Attempt::Success(b) if b == "x")
        );
    }
}
