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
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use clap::Parser;
use trainer::{RunConfig, RunOptions, TrainError};

/// Trains the paper's toy model: a GPT-2-like transformer with rotary embeddings on a synthetic
/// knowledge graph with a functor between two isomorphic categories.
///
/// Any configuration key can be given as a flag, e.g. `--num_entities 20 --n_layer 2`
/// (see `configs/default.toml` for the keys).
#[derive(Debug, Parser)]
#[command(name = "train", version, rename_all = "snake_case")]
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
    /// Dataset directory (generated from the data table when it holds no dataset).
    #[arg(long)]
    data_dir: Option<String>,
    /// Run directory: config, metrics, checkpoints, plots.
    #[arg(long)]
    save_dir: Option<String>,
    /// Passes over the training set.
    #[arg(long)]
    epochs: Option<String>,
    /// Rows per optimiser step.
    #[arg(long)]
    batch_size: Option<String>,
    /// Learning rate.
    #[arg(long)]
    lr: Option<String>,
    /// Weight decay (coupled L2 for adam, decoupled for adamw).
    #[arg(long)]
    weight_decay: Option<String>,
    /// Seed of initialisation, shuffles and dropout.
    #[arg(long)]
    seed: Option<String>,
    /// Model width.
    #[arg(long)]
    d_model: Option<String>,
    /// Transformer blocks.
    #[arg(long)]
    n_layer: Option<String>,
    /// Attention heads.
    #[arg(long)]
    n_head: Option<String>,
    /// Linear warm-up steps.
    #[arg(long)]
    warmup_steps: Option<String>,
    /// Print the evaluation table every N epochs.
    #[arg(long)]
    eval_every: Option<String>,
    /// Checkpoint every N epochs (0 = never).
    #[arg(long)]
    save_every: Option<String>,
    /// cpu, cuda or auto.
    #[arg(long)]
    device: Option<String>,
    /// Do not log to Weights & Biases.
    #[arg(long)]
    no_wandb: bool,
    /// W&B project (WANDB_PROJECT wins).
    #[arg(long)]
    wandb_project: Option<String>,
    /// W&B run name (WANDB_RUN_NAME / WANDB_NAME win).
    #[arg(long)]
    wandb_run: Option<String>,
    /// Any other configuration key, as KEY=VALUE (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Print the resolved configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// No evaluation tables on stdout.
    #[arg(long, short)]
    quiet: bool,
}

/// Flags that clap knows by name; every other `--key` that is a configuration key becomes
/// `--set key=value`.
const EXPLICIT: &[&str] = &[
    "config",
    "resume",
    "ensemble",
    "data_dir",
    "save_dir",
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "seed",
    "d_model",
    "n_layer",
    "n_head",
    "warmup_steps",
    "eval_every",
    "save_every",
    "device",
    "no_wandb",
    "wandb_project",
    "wandb_run",
    "set",
    "print_config",
    "quiet",
    "help",
    "version",
];

/// Normalises `--kebab-case` to `--snake_case` and turns generic config keys into `--set`.
fn rewrite_args(args: Vec<OsString>) -> Vec<OsString> {
    let mut out = Vec::with_capacity(args.len());
    let mut iter = args.into_iter();
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
        if EXPLICIT.contains(&name.as_str()) || !RunConfig::is_key(&name) {
            out.push(match value {
                Some(v) => format!("--{name}={v}").into(),
                None => format!("--{name}").into(),
            });
            continue;
        }
        let value = match value {
            Some(v) => Some(v),
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
    Ok(vec![cfg])
}

/// Applies the named flags, `--set`, `--no_wandb` and `--resume`'s directory to `cfg`, then
/// validates it.
fn apply_flags(cli: &Cli, cfg: &mut RunConfig) -> Result<()> {
    let named = [
        ("data_dir", &cli.data_dir),
        ("save_dir", &cli.save_dir),
        ("epochs", &cli.epochs),
        ("batch_size", &cli.batch_size),
        ("lr", &cli.lr),
        ("weight_decay", &cli.weight_decay),
        ("train.seed", &cli.seed),
        ("d_model", &cli.d_model),
        ("n_layer", &cli.n_layer),
        ("n_head", &cli.n_head),
        ("warmup_steps", &cli.warmup_steps),
        ("eval_every", &cli.eval_every),
        ("save_every", &cli.save_every),
        ("device", &cli.device),
        ("project", &cli.wandb_project),
        ("run_name", &cli.wandb_run),
    ];
    for (key, value) in named {
        if let Some(v) = value {
            let flag = format!("--{}", key.trim_start_matches("train."));
            cfg.set(key, v, &flag)?;
        }
    }
    for kv in &cli.set {
        let (key, value) = kv
            .split_once('=')
            .with_context(|| format!("--set {kv}: expected KEY=VALUE"))?;
        cfg.set(key, value, &format!("--{key}"))?;
    }
    if cli.no_wandb {
        cfg.wandb.use_wandb = false;
    }
    cfg.validate()?;
    Ok(())
}

/// A flag raised by the first Ctrl-C (the run stops after the current batch and writes its
/// checkpoints); a second Ctrl-C exits at once.
fn interrupt_flag() -> Result<Arc<AtomicBool>> {
    let interrupt = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&interrupt);
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            // A second Ctrl-C: stop now.
            std::process::exit(130);
        }
        eprintln!(
            "interrupt: finishing the current batch, writing a checkpoint (Ctrl-C again to abort)"
        );
    })
    .context("installing the Ctrl-C handler")?;
    Ok(interrupt)
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
    let interrupt = interrupt_flag()?;
    let resume = !cli.resume.is_empty();
    let mut extra_sinks = Vec::with_capacity(cfgs.len());
    for cfg in &cfgs {
        let mut sinks: Vec<Box<dyn trainer::MetricsSink>> = Vec::new();
        if let Some(sink) = trainer::wandb::start(cfg, resume)? {
            sinks.push(Box::new(sink));
        }
        extra_sinks.push(sinks);
    }
    let opts = RunOptions {
        resume,
        interrupt: Some(interrupt),
        extra_sinks,
        quiet: cli.quiet,
    };
    let batched = cfgs.len() > 1;
    let dirs: Vec<PathBuf> = cfgs.iter().map(|c| c.train.save_dir.clone()).collect();
    let outcomes = match trainer::run_members(cfgs, opts) {
        Ok(outcomes) => outcomes,
        Err(TrainError::Interrupted) => {
            for dir in &dirs {
                eprintln!(
                    "interrupted: resume with `train --resume {}`",
                    dir.display()
                );
            }
            return Ok(ExitCode::from(130));
        }
        Err(e) => return Err(e.into()),
    };
    let mut failed = false;
    for (dir, outcome) in dirs.iter().zip(outcomes) {
        match outcome {
            Ok(s) => eprintln!(
                "done: {} epochs, {} steps in {} ({:.1} steps/s, {:.2} ms/epoch training, {:.2} ms/eval, {:.1} s geometry{})",
                s.epochs,
                s.global_step,
                dir.display(),
                s.steps_this_run as f64 / s.train_seconds.max(1e-9),
                1e3 * s.train_seconds / s.epochs_this_run.max(1) as f64,
                1e3 * s.eval_seconds / s.epochs_this_run.max(1) as f64,
                s.geometry_seconds,
                if batched { ", batched" } else { "" },
            ),
            Err(e) if !batched => return Err(e.into()),
            Err(e) => {
                failed = true;
                eprintln!("error: {}: {e:#}", dir.display());
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
            eprintln!("error: {e:#}");
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
                "--lr=1e-3",
                "--set",
                "include_f_inverse=true",
                "--batch_size",
                "32",
                "--no_wandb"
            ]
        );
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
