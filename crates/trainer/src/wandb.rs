//! Starting the W&B backend of a run from its configuration and the environment.
//!
//! Online exactly when `WANDB_API_KEY` is set and W&B is not disabled (`use_wandb = false`,
//! `--no_wandb`, `WANDB_MODE=disabled|offline`). Project: `WANDB_PROJECT` > `--wandb_project` >
//! config `project` > `emergent_analogy`; run name: `WANDB_RUN_NAME`/`WANDB_NAME` >
//! `--wandb_run` > config `run_name` > `run_<unix time>` (flags arrive here already merged into
//! the config). The run id is kept in `save_dir/wandb-run-id`, so `--resume` continues the same
//! W&B run.

use std::path::Path;

use wandb_http::{Defaults, Resume, Run, Settings};

use crate::TrainError;
use crate::config::RunConfig;
use crate::sink::WandbSink;

/// File in the run directory holding the W&B run id.
pub const RUN_ID_FILE: &str = "wandb-run-id";

/// The display name used when none is configured: `run_<unix time>`, as the original.
pub fn default_run_name() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("run_{secs}")
}

/// Resolves the W&B settings of a run (without starting anything).
pub fn settings(cfg: &RunConfig, resume: bool) -> Result<Settings, TrainError> {
    let save_dir = &cfg.train.save_dir;
    let run_id = if resume { read_run_id(save_dir) } else { None };
    let defaults = Defaults {
        project: Some(cfg.wandb.project.clone()),
        run_name: Some(cfg.wandb.run_name.clone().unwrap_or_else(default_run_name)),
        resume: (resume && run_id.is_some()).then_some(Resume::Allow),
        run_id,
        disabled: !cfg.wandb.use_wandb,
        ..Defaults::default()
    };
    Ok(Settings::from_env(&defaults)?)
}

/// Starts the W&B run when the settings are online; `None` when W&B is off. A failure to start
/// (bad key, unreachable server past the start wait) is a warning, never a failed run.
pub fn start(cfg: &RunConfig, resume: bool) -> Result<Option<WandbSink>, TrainError> {
    let settings = settings(cfg, resume)?;
    if !settings.is_online() {
        return Ok(None);
    }
    let run_id = settings.run_id.clone();
    std::fs::create_dir_all(&cfg.train.save_dir).map_err(|source| TrainError::Io {
        path: cfg.train.save_dir.clone(),
        source,
    })?;
    crate::checkpoint::write_atomic(&cfg.train.save_dir.join(RUN_ID_FILE), run_id.as_bytes())?;
    match Run::start(settings, cfg.flat()) {
        Ok(run) => {
            match run.url() {
                Some(url) => eprintln!("W&B run: {url}"),
                None => eprintln!(
                    "W&B run {run_id}: creation still pending, streaming in the background"
                ),
            }
            Ok(Some(WandbSink::new(run)))
        }
        Err(e) => {
            tracing::warn!("W&B disabled for this run: {e}");
            Ok(None)
        }
    }
}

fn read_run_id(save_dir: &Path) -> Option<String> {
    std::fs::read_to_string(save_dir.join(RUN_ID_FILE))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}
