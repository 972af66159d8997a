//! Run settings resolved from the caller's values and the `WANDB_*` environment variables.

use std::fmt;

use crate::error::WandbError;
use crate::rng::SmallRng;

/// The base URL used when `WANDB_BASE_URL` is not set.
pub const DEFAULT_BASE_URL: &str = "https://api.wandb.ai";
/// The project used when neither the environment nor the caller names one (W&B's own default).
pub const DEFAULT_PROJECT: &str = "uncategorized";

/// What a base URL with a userinfo part (`name:secret@host`) is told it should be. Worded so that
/// it never repeats a part of such a URL.
pub(crate) const NO_USERINFO: &str = "an http:// or https:// URL without credentials before the \
host (W&B authenticates with WANDB_API_KEY)";

/// Whether the client talks to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Talk to the server (still needs an API key to be online, see [`Settings::is_online`]).
    Online,
    /// `WANDB_MODE=offline` or `dryrun`: this client writes nothing, the caller keeps local files.
    Offline,
    /// `WANDB_MODE=disabled`, or the caller disabled W&B.
    Disabled,
}

impl Mode {
    /// Parses a `WANDB_MODE` value; empty means online.
    pub fn parse(value: &str) -> Result<Mode, WandbError> {
        match value.trim().to_ascii_lowercase().as_str() {
            "" | "online" | "run" => Ok(Mode::Online),
            "offline" | "dryrun" => Ok(Mode::Offline),
            "disabled" => Ok(Mode::Disabled),
            _ => Err(invalid(
                "WANDB_MODE",
                value,
                "online, offline, dryrun or disabled",
            )),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Online => "online",
            Mode::Offline => "offline",
            Mode::Disabled => "disabled",
        })
    }
}

/// The `WANDB_RESUME` policy.
///
/// The upsert always continues an existing run's history after its last line, so `Allow` and
/// `Auto` behave alike; `Never` and `Must` turn a run that exists (resp. did not exist) into an
/// error from [`crate::Run::start`] before any history is sent.
///
/// When the run exists, the client also learns the step of its last history row (the `_step` of
/// the server's `summaryMetrics`) and does not send history rows at or below that step again —
/// a trainer resumed from a checkpoint older than what the killed process had streamed replays
/// those steps — while their values still update the summary; see the crate docs, "Resuming".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Resume if the run exists, otherwise create it.
    Allow,
    /// The run must exist.
    Must,
    /// The run must not exist.
    Never,
    /// Same as `Allow` for this client.
    Auto,
}

impl Resume {
    /// Parses a `WANDB_RESUME` value (`true` is accepted as `allow`, as the reference client does).
    pub fn parse(value: &str) -> Result<Resume, WandbError> {
        match value.trim().to_ascii_lowercase().as_str() {
            "allow" | "true" => Ok(Resume::Allow),
            "must" => Ok(Resume::Must),
            "never" => Ok(Resume::Never),
            "auto" => Ok(Resume::Auto),
            _ => Err(invalid("WANDB_RESUME", value, "allow, must, never or auto")),
        }
    }
}

impl fmt::Display for Resume {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Resume::Allow => "allow",
            Resume::Must => "must",
            Resume::Never => "never",
            Resume::Auto => "auto",
        })
    }
}

/// The caller's own values (flags, config file, defaults); any `WANDB_*` variable that is set
/// overrides the matching field.
#[derive(Debug, Clone, Default)]
pub struct Defaults {
    /// Project (overridden by `WANDB_PROJECT`); [`DEFAULT_PROJECT`] when both are absent.
    pub project: Option<String>,
    /// Display name (overridden by `WANDB_RUN_NAME`, then `WANDB_NAME`).
    pub run_name: Option<String>,
    /// Run id, e.g. read back from a run directory to resume (overridden by `WANDB_RUN_ID`);
    /// 8 random `[a-z0-9]` characters when both are absent.
    pub run_id: Option<String>,
    /// Entity (overridden by `WANDB_ENTITY`); `None` lets the server choose.
    pub entity: Option<String>,
    /// Run group (overridden by `WANDB_RUN_GROUP`).
    pub group: Option<String>,
    /// Tags (overridden by `WANDB_TAGS`).
    pub tags: Vec<String>,
    /// Notes (overridden by `WANDB_NOTES`).
    pub notes: Option<String>,
    /// Job type (overridden by `WANDB_JOB_TYPE`).
    pub job_type: Option<String>,
    /// Resume policy (overridden by `WANDB_RESUME`).
    pub resume: Option<Resume>,
    /// The caller switched W&B off (`--no_wandb`, `use_wandb = false`); no variable re-enables it.
    pub disabled: bool,
}

/// Everything needed to create and stream a run.
///
/// Fields are public so callers can adjust them after [`Settings::from_env`]; [`crate::Run::start`]
/// validates them again.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    /// `WANDB_API_KEY`; needed to be online.
    pub api_key: Option<String>,
    /// `WANDB_BASE_URL` without a trailing `/`. It must not carry credentials
    /// (`https://name:secret@host`): [`Settings::validate`] refuses them.
    pub base_url: String,
    /// `WANDB_ENTITY`; `None` sends null and the server picks the key owner's default entity.
    pub entity: Option<String>,
    /// `WANDB_PROJECT`.
    pub project: String,
    /// `WANDB_RUN_ID`: the run's unique name within the project.
    pub run_id: String,
    /// `WANDB_RUN_NAME` / `WANDB_NAME`: the name shown in the UI.
    pub display_name: Option<String>,
    /// `WANDB_RUN_GROUP`.
    pub group: Option<String>,
    /// `WANDB_TAGS`, split on commas.
    pub tags: Vec<String>,
    /// `WANDB_NOTES`.
    pub notes: Option<String>,
    /// `WANDB_JOB_TYPE`.
    pub job_type: Option<String>,
    /// `WANDB_SWEEP_ID`, sent as `sweep` in the upsert.
    pub sweep_id: Option<String>,
    /// `WANDB_RESUME`.
    pub resume: Option<Resume>,
    /// `WANDB_MODE`, or `Disabled` when the caller disabled W&B.
    pub mode: Mode,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key must not end up in logs.
        f.debug_struct("Settings")
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("base_url", &without_userinfo(&self.base_url))
            .field("entity", &self.entity)
            .field("project", &self.project)
            .field("run_id", &self.run_id)
            .field("display_name", &self.display_name)
            .field("group", &self.group)
            .field("tags", &self.tags)
            .field("notes", &self.notes)
            .field("job_type", &self.job_type)
            .field("sweep_id", &self.sweep_id)
            .field("resume", &self.resume)
            .field("mode", &self.mode)
            .finish()
    }
}

impl Settings {
    /// Resolves settings from the process environment; see [`Settings::from_lookup`].
    pub fn from_env(defaults: &Defaults) -> Result<Settings, WandbError> {
        Settings::from_lookup(defaults, |name| std::env::var(name).ok())
    }

    /// Resolves settings from `lookup` (a variable name → its value), so tests and callers with a
    /// `.env` map need not touch the process environment.
    ///
    /// A variable set to the empty string counts as unset. Environment variables win over
    /// `defaults`; `defaults.disabled` wins over `WANDB_MODE`.
    ///
    /// # Errors
    /// [`WandbError::InvalidSetting`] for an unknown `WANDB_MODE` / `WANDB_RESUME`, a base URL that
    /// is not `http(s)://host…` or that carries credentials (`user:password@`; the error shows
    /// neither), or a run id / project / entity that cannot be a URL path segment.
    pub fn from_lookup<F>(defaults: &Defaults, lookup: F) -> Result<Settings, WandbError>
    where
        F: Fn(&str) -> Option<String>,
    {
        let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let mode = match var("WANDB_MODE") {
            Some(m) => Mode::parse(&m)?,
            None => Mode::Online,
        };
        let mode = if defaults.disabled {
            Mode::Disabled
        } else {
            mode
        };
        let resume = match var("WANDB_RESUME") {
            Some(r) => Some(Resume::parse(&r)?),
            None => defaults.resume,
        };
        let tags = match var("WANDB_TAGS") {
            Some(t) => split_tags(&t),
            None => defaults.tags.clone(),
        };
        let base_url = normalize_base_url(
            &var("WANDB_BASE_URL").unwrap_or_else(|| DEFAULT_BASE_URL.to_owned()),
        );
        let run_id = var("WANDB_RUN_ID")
            .or_else(|| defaults.run_id.clone())
            .unwrap_or_else(|| generate_run_id(&mut SmallRng::from_entropy()));
        let settings = Settings {
            api_key: var("WANDB_API_KEY").map(|k| k.trim().to_owned()),
            base_url,
            entity: var("WANDB_ENTITY").or_else(|| defaults.entity.clone()),
            project: var("WANDB_PROJECT")
                .or_else(|| defaults.project.clone())
                .unwrap_or_else(|| DEFAULT_PROJECT.to_owned()),
            run_id,
            display_name: var("WANDB_RUN_NAME")
                .or_else(|| var("WANDB_NAME"))
                .or_else(|| defaults.run_name.clone()),
            group: var("WANDB_RUN_GROUP").or_else(|| defaults.group.clone()),
            tags,
            notes: var("WANDB_NOTES").or_else(|| defaults.notes.clone()),
            job_type: var("WANDB_JOB_TYPE").or_else(|| defaults.job_type.clone()),
            sweep_id: var("WANDB_SWEEP_ID"),
            resume,
            mode,
        };
        settings.validate()?;
        Ok(settings)
    }

    /// Online exactly when an API key is present and the mode is [`Mode::Online`] (so not disabled
    /// by the caller, and `WANDB_MODE` is not `disabled`, `offline` or `dryrun`).
    pub fn is_online(&self) -> bool {
        self.mode == Mode::Online && self.api_key.as_deref().is_some_and(|k| !k.is_empty())
    }

    /// Checks the fields that end up in URLs.
    ///
    /// A base URL with a userinfo part is refused: the key must come from `WANDB_API_KEY`, and a
    /// password in the URL would otherwise be printed and sent in place of the key. The error's
    /// value shows the URL with that part replaced by `<redacted>`.
    ///
    /// # Errors
    /// [`WandbError::InvalidSetting`] naming the field.
    pub fn validate(&self) -> Result<(), WandbError> {
        let shown = without_userinfo(&self.base_url);
        let url = reqwest::Url::parse(&self.base_url)
            .map_err(|e| invalid("WANDB_BASE_URL", &shown, &format!("an absolute URL ({e})")))?;
        if !url.username().is_empty() || url.password().is_some() || shown != self.base_url {
            return Err(invalid("WANDB_BASE_URL", &shown, NO_USERINFO));
        }
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(invalid(
                "WANDB_BASE_URL",
                &shown,
                "an http:// or https:// URL with a host",
            ));
        }
        check_segment("WANDB_RUN_ID", &self.run_id)?;
        check_segment("WANDB_PROJECT", &self.project)?;
        if let Some(entity) = &self.entity {
            check_segment("WANDB_ENTITY", entity)?;
        }
        Ok(())
    }
}

/// The run page for a run: API host `api.wandb.ai` → `wandb.ai`, any other `://api.` → `://app.`,
/// otherwise the base URL unchanged; then `/{entity}/{project}/runs/{run_id}`.
pub fn run_page_url(base_url: &str, entity: &str, project: &str, run_id: &str) -> String {
    let base = normalize_base_url(base_url);
    let app = if base.contains("://api.wandb.ai") {
        base.replacen("://api.wandb.ai", "://wandb.ai", 1)
    } else if base.contains("://api.") {
        base.replacen("://api.", "://app.", 1)
    } else {
        base
    };
    format!("{app}/{entity}/{project}/runs/{run_id}")
}

/// A fresh run id: 8 characters from `[a-z0-9]`.
pub(crate) fn generate_run_id(rng: &mut SmallRng) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..8)
        .map(|_| ALPHABET[(rng.next_u64() % ALPHABET.len() as u64) as usize] as char)
        .collect()
}

/// `url` with anything between `scheme://` and the last `@` of the authority replaced by
/// `<redacted>`: a form of a base URL safe to print, whether or not it parses.
pub(crate) fn without_userinfo(url: &str) -> String {
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[authority_start..];
    let authority_len = rest.find(['/', '?', '#', '\\']).unwrap_or(rest.len());
    match rest[..authority_len].rfind('@') {
        Some(at) => format!(
            "{}{}{}",
            &url[..authority_start],
            crate::redact::REDACTED,
            &rest[at..]
        ),
        None => url.to_owned(),
    }
}

fn normalize_base_url(url: &str) -> String {
    url.trim().trim_end_matches('/').to_owned()
}

fn split_tags(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

fn check_segment(key: &str, value: &str) -> Result<(), WandbError> {
    let bad = value.is_empty()
        || value
            .chars()
            .any(|c| c == '/' || c.is_whitespace() || c.is_control());
    if bad {
        Err(invalid(
            key,
            value,
            "a non-empty name without '/' or whitespace",
        ))
    } else {
        Ok(())
    }
}

fn invalid(key: &str, value: &str, expected: &str) -> WandbError {
    WandbError::InvalidSetting {
        key: key.to_owned(),
        value: value.to_owned(),
        expected: expected.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn caller() -> Defaults {
        Defaults {
            project: Some("from_flag".into()),
            run_name: Some("flag_run".into()),
            ..Defaults::default()
        }
    }

    #[test]
    fn environment_wins_over_caller_values() {
        let s = Settings::from_lookup(
            &caller(),
            env(&[
                ("WANDB_PROJECT", "env_proj"),
                ("WANDB_RUN_NAME", "env_run"),
                ("WANDB_NAME", "env_name"),
                ("WANDB_TAGS", " a, b ,,c "),
                ("WANDB_BASE_URL", "http://localhost:8080//"),
                ("WANDB_SWEEP_ID", "sw1"),
                ("WANDB_RESUME", "must"),
                ("WANDB_RUN_ID", "abc123"),
            ]),
        )
        .unwrap();
        assert_eq!(s.project, "env_proj");
        assert_eq!(s.display_name.as_deref(), Some("env_run"));
        assert_eq!(s.tags, vec!["a", "b", "c"]);
        assert_eq!(s.base_url, "http://localhost:8080");
        assert_eq!(s.sweep_id.as_deref(), Some("sw1"));
        assert_eq!(s.resume, Some(Resume::Must));
        assert_eq!(s.run_id, "abc123");
    }

    #[test]
    fn wandb_name_is_used_when_run_name_is_absent_and_caller_fills_the_rest() {
        let s = Settings::from_lookup(
            &caller(),
            env(&[("WANDB_NAME", "n"), ("WANDB_PROJECT", "")]),
        )
        .unwrap();
        assert_eq!(s.display_name.as_deref(), Some("n"));
        assert_eq!(s.project, "from_flag", "an empty variable counts as unset");
        let s = Settings::from_lookup(&caller(), env(&[])).unwrap();
        assert_eq!(s.display_name.as_deref(), Some("flag_run"));
        assert_eq!(s.base_url, DEFAULT_BASE_URL);
        let s = Settings::from_lookup(&Defaults::default(), env(&[])).unwrap();
        assert_eq!(s.project, DEFAULT_PROJECT);
    }

    #[test]
    fn generated_run_id_has_eight_lowercase_alphanumerics() {
        let s = Settings::from_lookup(&Defaults::default(), env(&[])).unwrap();
        assert_eq!(s.run_id.len(), 8);
        assert!(
            s.run_id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
        let t = Settings::from_lookup(&Defaults::default(), env(&[])).unwrap();
        assert_ne!(s.run_id, t.run_id);
    }

    #[test]
    fn online_needs_a_key_and_an_enabled_mode() {
        let on = |pairs: &[(&str, &str)], disabled: bool| {
            let d = Defaults {
                disabled,
                ..Defaults::default()
            };
            Settings::from_lookup(&d, env(pairs)).unwrap().is_online()
        };
        assert!(!on(&[], false));
        assert!(on(&[("WANDB_API_KEY", "k")], false));
        assert!(!on(&[("WANDB_API_KEY", "k")], true));
        assert!(!on(
            &[("WANDB_API_KEY", "k"), ("WANDB_MODE", "disabled")],
            false
        ));
        assert!(!on(
            &[("WANDB_API_KEY", "k"), ("WANDB_MODE", "offline")],
            false
        ));
        assert!(!on(
            &[("WANDB_API_KEY", "k"), ("WANDB_MODE", "dryrun")],
            false
        ));
        assert!(on(
            &[("WANDB_API_KEY", "k"), ("WANDB_MODE", "online")],
            false
        ));
        assert!(!on(
            &[("WANDB_API_KEY", "k"), ("WANDB_MODE", "online")],
            true
        ));
    }

    #[test]
    fn bad_values_are_rejected_with_the_variable_name() {
        for (k, v) in [
            ("WANDB_MODE", "sometimes"),
            ("WANDB_RESUME", "maybe"),
            ("WANDB_BASE_URL", "ftp://x"),
            ("WANDB_RUN_ID", "a/b"),
        ] {
            match Settings::from_lookup(&Defaults::default(), env(&[(k, v)])) {
                Err(WandbError::InvalidSetting { key, .. }) => assert_eq!(key, k),
                other => panic!("{k}={v}: expected InvalidSetting, got {other:?}"),
            }
        }
    }

    #[test]
    fn run_page_url_maps_api_hosts() {
        assert_eq!(
            run_page_url("https://api.wandb.ai", "e", "p", "r"),
            "https://wandb.ai/e/p/runs/r"
        );
        assert_eq!(
            run_page_url("https://api.example.com/", "e", "p", "r"),
            "https://app.example.com/e/p/runs/r"
        );
        assert_eq!(
            run_page_url("http://127.0.0.1:9/", "e", "p", "r"),
            "http://127.0.0.1:9/e/p/runs/r"
        );
    }

    #[test]
    fn a_base_url_with_credentials_is_refused_without_showing_them() {
        for url in [
            "http://user:pw@host",
            "https://alice:hunter2@api.example.com/",
            "https://alice@api.example.com",
            "https://:hunter2@api.example.com",
            "http://user:pw@",
            "http://user:pw@ho st/x",
            "https://alice:hunter2@api.example.com@other/x",
        ] {
            let result =
                Settings::from_lookup(&Defaults::default(), env(&[("WANDB_BASE_URL", url)]));
            let Err(err) = result else {
                panic!("{url}: accepted");
            };
            let WandbError::InvalidSetting { key, .. } = &err else {
                panic!("{url}: {err:?}");
            };
            assert_eq!(key, "WANDB_BASE_URL");
            for text in [err.to_string(), format!("{err:?}")] {
                assert!(text.contains("WANDB_BASE_URL"), "{text}");
                for secret in ["user", "pw", "alice", "hunter2"] {
                    assert!(!text.contains(secret), "{url}: {secret} in {text}");
                }
            }
        }
        // A field set by hand is checked again (by `Run::start` through `validate`), and Debug
        // never shows it.
        let mut s = Settings::from_lookup(&Defaults::default(), env(&[])).unwrap();
        s.base_url = "https://alice:hunter2@api.wandb.ai".into();
        assert!(matches!(
            s.validate(),
            Err(WandbError::InvalidSetting { .. })
        ));
        let debug = format!("{s:?}");
        assert!(
            !debug.contains("alice") && !debug.contains("hunter2"),
            "{debug}"
        );
        assert!(debug.contains("https://<redacted>@api.wandb.ai"), "{debug}");
        assert_eq!(
            without_userinfo("https://api.wandb.ai/x@y"),
            "https://api.wandb.ai/x@y"
        );
    }

    #[test]
    fn debug_output_redacts_the_key() {
        let s = Settings::from_lookup(
            &Defaults::default(),
            env(&[("WANDB_API_KEY", "secret-key")]),
        )
        .unwrap();
        assert!(!format!("{s:?}").contains("secret-key"));
    }
}
