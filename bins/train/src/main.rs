//! `train`: trains the GPT-RoPE model on a knowledge-graph dataset.
//!
//! Glue only: parse flags, resolve the configuration (environment > flags > config file >
//! defaults), start W&B when it is on, call [`trainer::run`] (or, with `--ensemble`,
//! [`trainer::run_members`] for several configurations at once), report.
//!
//! Every configuration key is also a flag (`--lr 1e-3`, `--lr=1e-3`, `--d_model=256`,
//! `--num-entities 20`), so the program works as the command of a W&B sweep agent.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser};
use trainer::{RunConfig, RunOptions, TrainError};

/// Trains the paper's toy model: a GPT-2-like transformer with rotary embeddings on a synthetic
/// knowledge graph with a functor between two isomorphic categories.
///
/// Every configuration key is also a flag, `--key value` or `--key=value`, in snake or kebab case
/// (`--lr 1e-3`, `--num-entities 20`); a boolean key without a value means true. The keys are
/// listed below (`--help`) and documented in configs/default.toml.
#[derive(Debug, Parser)]
#[command(
    name = "train",
    version,
    rename_all = "snake_case",
    after_long_help = config_keys_help()
)]
struct Cli {
    /// TOML configuration file (tables data, model, train and wandb).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint (its config.toml is the base;
    /// flags such as --epochs still apply). Several directories of runs that trained together
    /// (`--ensemble`, a batched sweep) resume together as one batched ensemble.
    #[arg(long, value_name = "SAVE_DIR", num_args = 1..)]
    resume: Vec<PathBuf>,
    /// Train these configurations (complete TOML files, each with its own save_dir) together as
    /// one batched ensemble; they may differ only in per-run keys (seed, lr, weight_decay,
    /// warmup_steps, optimizer, logging, save_dir, wandb). Other flags apply to every member.
    #[arg(long, num_args = 1.., value_name = "CONFIG", conflicts_with_all = ["config", "resume"])]
    ensemble: Vec<PathBuf>,
    /// Start afresh in a save_dir that already holds a run, removing its record (without it,
    /// such a directory is refused: use --resume to continue it).
    #[arg(long, conflicts_with = "resume")]
    overwrite: bool,
    /// Do not log to Weights & Biases (the original's flag; same as --use_wandb false).
    #[arg(long)]
    no_wandb: bool,
    /// W&B project (the original's flag for `project`; WANDB_PROJECT wins).
    #[arg(long)]
    wandb_project: Option<String>,
    /// W&B run name (the original's flag for `run_name`; WANDB_RUN_NAME / WANDB_NAME win).
    #[arg(long)]
    wandb_run: Option<String>,
    /// A configuration key, as KEY=VALUE (repeatable; also `table.key=value`). Every key is also
    /// a flag of its own.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Print the resolved configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// Check the flags and the configuration and say what would run, without reading or
    /// writing any run directory or dataset.
    #[arg(long)]
    dry_run: bool,
    /// No evaluation tables on stdout.
    #[arg(long, short)]
    quiet: bool,
}

/// The configuration keys as `train --help` lists them, from their one definition.
fn config_keys_help() -> String {
    let mut out = String::from("Configuration keys (each is a flag: --KEY VALUE):\n");
    let mut table = "";
    for f in trainer::config::fields::FIELDS {
        if f.table != table {
            table = f.table;
            out.push_str(&format!("\n  [{table}]\n"));
        }
        out.push_str(&format!("  --{:<24} {}\n", f.flat, f.doc));
    }
    out
}

/// Normalises `--kebab-case` to `--snake_case` and turns every configuration key into
/// `--set key=value` (a boolean key without a value is `true`); the program's own flags pass
/// through to clap.
fn rewrite_args(args: Vec<OsString>) -> Vec<OsString> {
    let command = Cli::command();
    let own: Vec<String> = command
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_string))
        .chain(["help".to_string(), "version".to_string()])
        .collect();
    let mut out = Vec::with_capacity(args.len());
    let mut iter = args.into_iter().peekable();
    if let Some(program) = iter.next() {
        out.push(program);
    }
    while let Some(arg) = iter.next() {
        let Some(text) = arg
            .to_str()
            .and_then(|s| s.strip_prefix("--"))
            .map(str::to_owned)
        else {
            out.push(arg);
            continue;
        };
        let (name, value) = match text.split_once('=') {
            Some((n, v)) => (n.replace('-', "_"), Some(v.to_owned())),
            None => (text.replace('-', "_"), None),
        };
        let field = trainer::config::fields::find(&name);
        if own.contains(&name) || field.is_none() {
            out.push(match value {
                Some(v) => format!("--{name}={v}").into(),
                None => format!("--{name}").into(),
            });
            continue;
        }
        let bare_bool = field.is_some_and(|f| f.kind == trainer::config::fields::ValueKind::Bool)
            && iter
                .peek()
                .and_then(|next| next.to_str())
                .is_none_or(|next| next.starts_with("--"));
        let value = match value {
            Some(v) => Some(v),
            None if bare_bool => Some("true".to_string()),
            None => iter.next().and_then(|v| v.into_string().ok()),
        };
        out.push("--set".into());
        out.push(format!("{name}={}", value.unwrap_or_default()).into());
    }
    out
}

/// The configurations to train: one (`--config`, or the defaults), each `--ensemble` file, or
/// each `--resume` directory's `config.toml`; then the flags, applied to every one.
fn resolve_members(cli: &Cli) -> Result<Vec<RunConfig>> {
    if !cli.resume.is_empty() {
        if let Some(path) = &cli.config {
            anyhow::bail!(
                "--config {} and --resume cannot be combined: a resumed run keeps its own config",
                path.display()
            );
        }
        if let Some(kv) = cli.set.iter().find(|kv| {
            kv.split_once('=')
                .and_then(|(k, _)| RunConfig::qualify(k))
                .is_some_and(|q| q == "train.save_dir")
        }) {
            anyhow::bail!(
                "--save_dir ({kv}) cannot be combined with --resume: a resumed run stays in its directory"
            );
        }
        return cli
            .resume
            .iter()
            .map(|dir| {
                let origin = || format!("--resume {}", dir.display());
                let mut cfg = RunConfig::from_file(&dir.join("config.toml"))
                    .with_context(|| format!("{}: reading the run's configuration", origin()))?;
                apply_flags(cli, &mut cfg).with_context(origin)?;
                cfg.train.save_dir = dir.clone();
                Ok(cfg)
            })
            .collect();
    }
    if !cli.ensemble.is_empty() {
        return cli
            .ensemble
            .iter()
            .map(|path| {
                let mut cfg = RunConfig::from_file(path)?;
                apply_flags(cli, &mut cfg)
                    .with_context(|| format!("--ensemble {}", path.display()))?;
                Ok(cfg)
            })
            .collect();
    }
    let mut cfg = match &cli.config {
        Some(path) => RunConfig::from_file(path)?,
        None => RunConfig::default(),
    };
    apply_flags(cli, &mut cfg)?;
    if cfg.train.save_dir.as_os_str().is_empty() {
        let stem = cli
            .config
            .as_deref()
            .and_then(|p| p.file_stem())
            .map_or("run".to_string(), |s| s.to_string_lossy().to_string());
        cfg.train.save_dir = trainer::run_dir::fresh_dir(&stem);
    }
    Ok(vec![cfg])
}

/// Applies the configuration flags (`--set`, in order), the original's W&B flags and
/// `--no_wandb` to `cfg`, then validates it.
fn apply_flags(cli: &Cli, cfg: &mut RunConfig) -> Result<()> {
    for kv in &cli.set {
        let (key, value) = kv
            .split_once('=')
            .with_context(|| format!("--set {kv}: expected KEY=VALUE"))?;
        cfg.set(key, value, &format!("--{key}"))?;
    }
    let originals = [
        ("project", "--wandb_project", &cli.wandb_project),
        ("run_name", "--wandb_run", &cli.wandb_run),
    ];
    for (key, flag, value) in originals {
        if let Some(v) = value {
            cfg.set(key, v, flag)?;
        }
    }
    if cli.no_wandb {
        cfg.wandb.use_wandb = false;
    }
    cfg.validate()?;
    Ok(())
}

/// Trains the resolved configurations: one run, or several (`--ensemble`, several `--resume`
/// directories) as one batched process. Exit status 0 when every member finished, 130 when
/// interrupted, 1 when any member failed (each failure is printed).
fn run(cli: Cli) -> Result<ExitCode> {
    let cfgs = resolve_members(&cli)?;
    if cli.print_config {
        for cfg in &cfgs {
            if cfgs.len() > 1 {
                println!("# {}", cfg.train.save_dir.display());
            }
            print!("{}", cfg.to_toml_string());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let resume = !cli.resume.is_empty();
    // Refuse what would be refused anyway before W&B starts a run for it (and in a dry run).
    if cfgs.len() > 1 {
        for (i, cfg) in cfgs.iter().enumerate() {
            trainer::config::batching::compatible(&cfgs[0], cfg).map_err(|reason| {
                anyhow::anyhow!(
                    "ensemble member {i} ({}): {reason}",
                    cfg.train.save_dir.display()
                )
            })?;
        }
    }
    for cfg in &cfgs {
        let dir = &cfg.train.save_dir;
        let plan = if resume {
            let Some(ck) = trainer::checkpoint::newest_valid(dir) else {
                anyhow::bail!(
                    "--resume {}: no valid checkpoint there (the run stopped before its first one); start it again with --overwrite",
                    dir.display()
                );
            };
            format!(
                "resume {} from epoch {} (step {}) to epoch {}",
                dir.display(),
                ck.sidecar.epoch,
                ck.sidecar.global_step,
                cfg.train.epochs
            )
        } else {
            let what = trainer::run_dir::existing_run(dir);
            if !cli.overwrite {
                trainer::run_dir::refuse_existing(dir)?;
            } else if !cli.dry_run {
                // Cleared before W&B writes its run id there.
                trainer::run_dir::prepare_fresh(dir, true)?;
            }
            format!(
                "train {} epochs of d_model {} on {} into {}{}",
                cfg.train.epochs,
                cfg.model.d_model,
                cfg.train.data_dir.display(),
                dir.display(),
                match what {
                    Some(w) => format!(" (replacing {w})"),
                    None => String::new(),
                }
            )
        };
        if cli.dry_run {
            let wandb = if cfg.wandb.use_wandb {
                "; W&B when WANDB_API_KEY is set"
            } else {
                ""
            };
            println!("would {plan}{wandb}");
        }
    }
    if cli.dry_run {
        return Ok(ExitCode::SUCCESS);
    }
    let device = trainer::train::select_device(cfgs[0].train.device)?;
    if cfgs[0].train.threads > 0 {
        tch::set_num_threads(cfgs[0].train.threads as i32);
    }
    let mut provenance = trainer::provenance::Provenance {
        command: std::env::args().collect(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        git_commit: env!("TRAIN_GIT_COMMIT").to_string(),
        git_dirty: env!("TRAIN_GIT_DIRTY").to_string(),
        libtorch: env!("TRAIN_LIBTORCH_VERSION").to_string(),
        tch: env!("TRAIN_TCH_VERSION").to_string(),
        device: {
            let n = tch::get_num_threads();
            format!("{device:?}, {n} thread{}", if n == 1 { "" } else { "s" })
        },
        host: trainer::provenance::host_name(),
        started_at: trainer::provenance::now_utc(),
        wandb: String::new(),
    };
    let mut wandb_options = trainer::wandb::WandbOptions::default();
    wandb_options
        .extra_config
        .insert("provenance".into(), provenance.to_json());
    let stop = signals::install(
        "train",
        "stopping after the current batch and writing a checkpoint",
    )
    .context("installing the signal handlers")?;
    let mut extra_sinks = Vec::with_capacity(cfgs.len());
    for cfg in &cfgs {
        let mut sinks: Vec<Box<dyn trainer::MetricsSink>> = Vec::new();
        let sink = trainer::wandb::start_with(
            cfg,
            resume,
            |name| std::env::var(name).ok(),
            &wandb_options,
        )?;
        provenance.wandb = match &sink {
            Some(s) => format!("on ({})", s.url().unwrap_or_else(|| "run pending".into())),
            None => trainer::wandb::state_in_words(cfg),
        };
        sinks.extend(sink.map(|s| Box::new(s) as Box<dyn trainer::MetricsSink>));
        extra_sinks.push(sinks);
    }
    let opts = RunOptions {
        resume,
        overwrite: cli.overwrite,
        interrupt: Some(stop.flag()),
        extra_sinks,
        quiet: cli.quiet,
        provenance: Some(provenance),
    };
    let batched = cfgs.len() > 1;
    let dirs: Vec<PathBuf> = cfgs.iter().map(|c| c.train.save_dir.clone()).collect();
    let outcomes = match trainer::run_members(cfgs, opts) {
        Ok(outcomes) => outcomes,
        Err(TrainError::Interrupted) => {
            let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            eprintln!(
                "interrupted: a checkpoint of where the run stood is written; continue with `train --resume {}`",
                dirs.join(" ")
            );
            return Ok(ExitCode::from(stop.exit_code()));
        }
        Err(e) => return Err(e.into()),
    };
    let mut failed = false;
    for (dir, outcome) in dirs.iter().zip(outcomes) {
        match outcome {
            Ok(s) => {
                eprintln!(
                    "done: {} epochs, {} steps in {} ({:.1} steps/s, {:.2} ms/epoch training, {:.2} ms/eval, {:.1} s geometry{})",
                    s.epochs,
                    s.global_step,
                    dir.display(),
                    s.steps_this_run as f64 / s.train_seconds.max(1e-9),
                    1e3 * s.train_seconds / s.epochs_this_run.max(1) as f64,
                    1e3 * s.eval_seconds / s.epochs_this_run.max(1) as f64,
                    s.geometry_seconds,
                    if batched { ", batched" } else { "" },
                );
                let accuracy = dir.join("plots/accuracy.png");
                if accuracy.is_file() && !batched {
                    eprintln!(
                        "accuracy per fact type over training (the paper's Fig. 1B): {}",
                        accuracy.display()
                    );
                }
                if s.diverged {
                    eprintln!(
                        "warning: the training loss of {} diverged (summary.json has diverged = true)",
                        dir.display()
                    );
                }
            }
            Err(e) if !batched => return Err(e.into()),
            Err(e) => {
                failed = true;
                eprintln!("error: {}: {}", dir.display(), run_config::error_text(&e));
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn main() -> ExitCode {
    trainer::tune_allocator();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse_from(rewrite_args(std::env::args_os().collect()));
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", run_config::error_text(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(xs: &[&str]) -> Vec<OsString> {
        xs.iter().map(OsString::from).collect()
    }

    #[test]
    fn generic_keys_become_set_and_kebab_case_is_accepted() {
        let out = rewrite_args(args(&[
            "train",
            "--num-entities",
            "20",
            "--lr=1e-3",
            "--include_f_inverse=true",
            "--batch-size",
            "32",
            "--no-wandb",
        ]));
        let out: Vec<String> = out.into_iter().map(|s| s.into_string().unwrap()).collect();
        assert_eq!(
            out,
            [
                "train",
                "--set",
                "num_entities=20",
                "--set",
                "lr=1e-3",
                "--set",
                "include_f_inverse=true",
                "--set",
                "batch_size=32",
                "--no_wandb"
            ]
        );
        // A boolean key without a value is true and does not swallow the next flag.
        let out = rewrite_args(args(&[
            "train",
            "--include_f_inverse",
            "--epochs",
            "5",
            "--plots",
        ]));
        let out: Vec<String> = out.into_iter().map(|s| s.into_string().unwrap()).collect();
        assert_eq!(
            out,
            [
                "train",
                "--set",
                "include_f_inverse=true",
                "--set",
                "epochs=5",
                "--set",
                "plots=true"
            ]
        );
    }

    #[test]
    fn the_help_lists_every_configuration_key_and_the_flags_resolve_to_them() {
        let help = Cli::command().render_long_help().to_string();
        for f in trainer::config::fields::FIELDS {
            assert!(
                help.contains(&format!("--{}", f.flat)),
                "--{} not in --help",
                f.flat
            );
            // Each key's flag reaches its field.
            let value = match f.kind {
                trainer::config::fields::ValueKind::Bool => "true",
                trainer::config::fields::ValueKind::List => "[1, 2]",
                trainer::config::fields::ValueKind::Number => "3",
                trainer::config::fields::ValueKind::Text => "x",
            };
            let out = rewrite_args(args(&["train", &format!("--{}", f.flat), value]));
            assert_eq!(out[1], "--set", "--{}", f.flat);
            assert_eq!(out[2], OsString::from(format!("{}={value}", f.flat)));
        }
    }

    #[test]
    fn flags_override_the_file_and_name_the_flag_on_error() {
        let cli = Cli::parse_from(rewrite_args(args(&[
            "train",
            "--lr",
            "3e-3",
            "--d_model=64",
            "--num_entities=20",
            "--no_wandb",
        ])));
        let cfg = resolve_members(&cli).unwrap().remove(0);
        assert_eq!(cfg.train.lr, 3e-3);
        assert_eq!(cfg.model.d_model, 64);
        assert_eq!(cfg.data.num_entities, 20);
        assert!(!cfg.wandb.use_wandb);
        let cli = Cli::parse_from(rewrite_args(args(&["train", "--batch_size", "lots"])));
        let err = format!("{:#}", resolve_members(&cli).unwrap_err());
        assert!(
            err.contains("--batch_size") && err.contains("batch_size"),
            "{err}"
        );
        assert!(
            Cli::try_parse_from(rewrite_args(args(&["train", "--learning_rate", "1"]))).is_err()
        );
    }

    #[test]
    fn ensemble_members_are_their_files_with_the_flags_applied_to_each() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, seed: u64| {
            let mut cfg = RunConfig::default();
            cfg.train.seed = seed;
            cfg.train.save_dir = dir.path().join(name);
            let path = dir.path().join(format!("{name}.toml"));
            std::fs::write(&path, cfg.to_toml_string()).unwrap();
            path
        };
        let (a, b) = (write("a", 1), write("b", 2));
        let argv = |extra: &[&str]| {
            let mut v = vec![
                "train",
                "--ensemble",
                a.to_str().unwrap(),
                b.to_str().unwrap(),
            ];
            v.extend_from_slice(extra);
            Cli::parse_from(rewrite_args(args(&v)))
        };
        let cfgs = resolve_members(&argv(&["--epochs", "7", "--set", "train.threads=1"])).unwrap();
        assert_eq!(cfgs.len(), 2);
        assert_eq!((cfgs[0].train.seed, cfgs[1].train.seed), (1, 2));
        assert!(
            cfgs.iter()
                .all(|c| c.train.epochs == 7 && c.train.threads == 1)
        );
        assert_eq!(cfgs[1].train.save_dir, dir.path().join("b"));
        // A bad value names the member file and the flag.
        let err = format!(
            "{:#}",
            resolve_members(&argv(&["--lr", "fast"])).unwrap_err()
        );
        assert!(err.contains("a.toml") && err.contains("--lr"), "{err}");
        // A missing member file is named.
        let missing = dir.path().join("missing.toml");
        let cli = Cli::parse_from(rewrite_args(args(&[
            "train",
            "--ensemble",
            missing.to_str().unwrap(),
        ])));
        let err = format!("{:#}", resolve_members(&cli).unwrap_err());
        assert!(err.contains("missing.toml"), "{err}");
        // --ensemble replaces --config and cannot resume.
        for other in [["--config", "x.toml"], ["--resume", "runs/x"]] {
            let mut v = vec!["train", "--ensemble", "a.toml"];
            v.extend_from_slice(&other);
            assert!(
                Cli::try_parse_from(rewrite_args(args(&v))).is_err(),
                "{other:?}"
            );
        }
    }

    #[test]
    fn several_resume_directories_resume_together_with_their_own_configs() {
        let dir = tempfile::tempdir().unwrap();
        let mut dirs = Vec::new();
        for (name, seed) in [("a", 1u64), ("b", 2)] {
            let run = dir.path().join(name);
            std::fs::create_dir_all(&run).unwrap();
            let mut cfg = RunConfig::default();
            cfg.train.seed = seed;
            cfg.train.save_dir = PathBuf::from("elsewhere");
            std::fs::write(run.join("config.toml"), cfg.to_toml_string()).unwrap();
            dirs.push(run);
        }
        let argv = |extra: &[&str]| {
            let mut v = vec!["train", "--resume"];
            v.extend(dirs.iter().map(|d| d.to_str().unwrap()));
            v.extend_from_slice(extra);
            Cli::parse_from(rewrite_args(args(&v)))
        };
        let cfgs = resolve_members(&argv(&["--epochs", "9"])).unwrap();
        assert_eq!(cfgs.len(), 2);
        assert_eq!((cfgs[0].train.seed, cfgs[1].train.seed), (1, 2));
        // Each run keeps its directory, whatever its config says; the flags apply to both.
        assert_eq!(cfgs[0].train.save_dir, dirs[0]);
        assert_eq!(cfgs[1].train.save_dir, dirs[1]);
        assert!(cfgs.iter().all(|c| c.train.epochs == 9));
        let missing = dir.path().join("missing");
        let cli = Cli::parse_from(rewrite_args(args(&[
            "train",
            "--resume",
            missing.to_str().unwrap(),
        ])));
        let err = format!("{:#}", resolve_members(&cli).unwrap_err());
        assert!(err.contains("--resume") && err.contains("missing"), "{err}");
    }
}
