//! Starting the W&B backend of a run from its configuration and the environment.
//!
//! Online exactly when `WANDB_API_KEY` is set and W&B is not disabled (`use_wandb = false`,
//! `--no_wandb`, `WANDB_MODE=disabled|offline|dryrun`). Project: `WANDB_PROJECT` >
//! `--wandb_project` > config `project` > `emergent_analogy`; run name:
//! `WANDB_RUN_NAME`/`WANDB_NAME` > `--wandb_run` > config `run_name` > `run_<unix time>` (flags
//! arrive here already merged into the config). `WANDB_SWEEP_ID` is sent as the run's sweep, and
//! the other `WANDB_*` variables (`BASE_URL`, `ENTITY`, `RUN_ID`, `RESUME`, `RUN_GROUP`, `TAGS`,
//! `NOTES`, `JOB_TYPE`) are honoured as the `wandb-http` crate documents.
//!
//! The run id is kept in `save_dir/wandb-run-id`, so `--resume` continues the same W&B run (a
//! `WANDB_RUN_ID` in the environment still wins, as a sweep agent sets it).
//!
//! [`settings`] and [`start`] read the process environment; [`settings_with`] and [`start_with`]
//! take any variable source and the client's timing knobs, so tests need not touch the
//! environment.

use std::path::Path;
use std::time::Duration;

use wandb_http::{ClientOptions, Defaults, Resume, Run, Settings};

use crate::TrainError;
use crate::config::{RunConfig, WandbConfig};
use crate::sink::WandbSink;

/// File in the run directory holding the W&B run id.
pub const RUN_ID_FILE: &str = "wandb-run-id";

/// How long the end of a run waits for W&B to confirm the last rows and the exit code.
pub const DEFAULT_FINISH_DEADLINE: Duration = Duration::from_secs(30);

/// Networking knobs of the W&B backend.
#[derive(Debug, Clone, PartialEq)]
pub struct WandbOptions {
    /// Retry, cadence, timeout and size limits of the client (defaults suit the real server).
    pub client: ClientOptions,
    /// The longest the end of a run waits for the final flush and exit code
    /// ([`DEFAULT_FINISH_DEADLINE`]); what is not confirmed by then is reported and dropped.
    pub finish_deadline: Duration,
    /// Entries sent with the run config besides the configuration's flat keys (the run's
    /// provenance).
    pub extra_config: serde_json::Map<String, serde_json::Value>,
}

impl Default for WandbOptions {
    fn default() -> Self {
        Self {
            client: ClientOptions::default(),
            finish_deadline: DEFAULT_FINISH_DEADLINE,
            extra_config: serde_json::Map::new(),
        }
    }
}

/// The display name used when none is configured: `run_<unix time>`, as the original.
pub fn default_run_name() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("run_{secs}")
}

/// Resolves the W&B settings of a run from the process environment (without starting
/// anything); see [`settings_with`].
///
/// # Errors
/// [`TrainError::Wandb`] for an invalid `WANDB_*` value.
pub fn settings(cfg: &RunConfig, resume: bool) -> Result<Settings, TrainError> {
    settings_with(cfg, resume, env_var)
}

/// Resolves the W&B settings of a run, `lookup` giving the `WANDB_*` variables (name → value; an
/// empty value counts as unset).
///
/// With `resume`, the run id stored in `save_dir` is reused with the `allow` resume policy.
///
/// # Errors
/// [`TrainError::Wandb`] for an invalid `WANDB_MODE`, `WANDB_RESUME` or `WANDB_BASE_URL`, or a
/// project, entity or run id that cannot be part of a URL path.
pub fn settings_with<F>(cfg: &RunConfig, resume: bool, lookup: F) -> Result<Settings, TrainError>
where
    F: Fn(&str) -> Option<String>,
{
    let run_id = if resume {
        read_run_id(&cfg.train.save_dir)
    } else {
        None
    };
    let project = Some(cfg.wandb.project.trim())
        .filter(|p| !p.is_empty())
        .map_or_else(|| WandbConfig::default().project, str::to_string);
    let run_name = cfg
        .wandb
        .run_name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map_or_else(default_run_name, str::to_string);
    let defaults = Defaults {
        project: Some(project),
        run_name: Some(run_name),
        resume: run_id.is_some().then_some(Resume::Allow),
        run_id,
        disabled: !cfg.wandb.use_wandb,
        ..Defaults::default()
    };
    Ok(Settings::from_lookup(&defaults, lookup)?)
}

/// Starts the W&B run from the process environment with the default [`WandbOptions`]; see
/// [`start_with`].
///
/// # Errors
/// As [`start_with`].
pub fn start(cfg: &RunConfig, resume: bool) -> Result<Option<WandbSink>, TrainError> {
    start_with(cfg, resume, env_var, &WandbOptions::default())
}

/// Starts the W&B run when the settings are online; `None` when W&B is off. Prints the run page
/// (or that creation is still pending) to stderr.
///
/// The upsert is waited for at most [`ClientOptions::start_wait`]; after that it continues in the
/// background while training runs. A failure to start (bad key, server unreachable past the
/// client's retry budget) is a warning and the run trains without W&B.
///
/// # Errors
/// [`TrainError::Wandb`] for invalid `WANDB_*` values (see [`settings_with`]);
/// [`TrainError::Io`] when the run id cannot be written to `save_dir`.
pub fn start_with<F>(
    cfg: &RunConfig,
    resume: bool,
    lookup: F,
    options: &WandbOptions,
) -> Result<Option<WandbSink>, TrainError>
where
    F: Fn(&str) -> Option<String>,
{
    let settings = settings_with(cfg, resume, lookup)?;
    if !settings.is_online() {
        return Ok(None);
    }
    let run_id = settings.run_id.clone();
    std::fs::create_dir_all(&cfg.train.save_dir).map_err(|source| TrainError::Io {
        path: cfg.train.save_dir.clone(),
        source,
    })?;
    crate::checkpoint::write_atomic(&cfg.train.save_dir.join(RUN_ID_FILE), run_id.as_bytes())?;
    let mut config = cfg.flat();
    config.extend(options.extra_config.clone());
    match Run::start_with(settings, config, options.client.clone()) {
        Ok(run) => {
            match run.url() {
                Some(url) => eprintln!("W&B run: {url}"),
                None => eprintln!(
                    "W&B run {run_id}: creation still pending, streaming in the background"
                ),
            }
            Ok(Some(
                WandbSink::new(run).with_finish_deadline(options.finish_deadline),
            ))
        }
        Err(e) => {
            tracing::warn!("W&B disabled for this run: {e}");
            Ok(None)
        }
    }
}

/// Whether a run of `cfg` streams to W&B, and if not why, in words, from the process
/// environment (what the banner says).
pub fn state_in_words(cfg: &RunConfig) -> String {
    let var = |name: &str| env_var(name).filter(|v| !v.is_empty());
    if !cfg.wandb.use_wandb {
        return "off (use_wandb = false or --no_wandb)".into();
    }
    if let Some(mode @ ("disabled" | "offline" | "dryrun")) = var("WANDB_MODE").as_deref() {
        return format!("off (WANDB_MODE={mode})");
    }
    if var("WANDB_API_KEY").is_none() {
        return "off (no WANDB_API_KEY)".into();
    }
    format!(
        "on (project {})",
        var("WANDB_PROJECT").unwrap_or_else(|| cfg.wandb.project.clone())
    )
}

/// The run id stored in `save_dir` by an earlier [`start`], if any.
pub fn read_run_id(save_dir: &Path) -> Option<String> {
    std::fs::read_to_string(save_dir.join(RUN_ID_FILE))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}
