//! Times ensemble training against separate runs on the default configuration's shapes
//! (V = 10 011, d_model 128, batch 64): one separate run, K members batched, and K separate
//! runs one after another, each for a fixed number of epochs with geometry tracking, plots and
//! W&B off. Prints one JSON object per measurement and a summary line.
//!
//! ```text
//! cargo run --release -p trainer --example ensemble_bench -- [--epochs 5] [--k 3]
//!     [--device cpu|cuda|auto] [--threads 0] [--data_dir data/composition_functor.10.10000.5]
//! ```
//! The dataset is generated from the default `[data]` parameters when the directory holds none.

use std::path::PathBuf;
use std::time::Instant;

use trainer::{DeviceChoice, GeometrySchedule, RunConfig, RunOptions};

struct Args {
    epochs: usize,
    k: usize,
    device: DeviceChoice,
    threads: usize,
    data_dir: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        epochs: 5,
        k: 3,
        device: DeviceChoice::Cpu,
        threads: 0,
        data_dir: RunConfig::default().train.data_dir,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("`{flag}` needs a value"))?;
        let number = |v: &str| {
            v.parse::<usize>()
                .map_err(|e| format!("`{flag}` = {v:?}: {e}"))
        };
        match flag.as_str() {
            "--epochs" => args.epochs = number(&value)?,
            "--k" => args.k = number(&value)?.max(1),
            "--threads" => args.threads = number(&value)?,
            "--data_dir" => args.data_dir = PathBuf::from(value),
            "--device" => {
                args.device = match value.as_str() {
                    "cpu" => DeviceChoice::Cpu,
                    "cuda" => DeviceChoice::Cuda,
                    "auto" => DeviceChoice::Auto,
                    other => return Err(format!("`--device` = {other:?}: cpu, cuda or auto")),
                }
            }
            other => return Err(format!("unknown flag `{other}`")),
        }
    }
    Ok(args)
}

fn config(args: &Args, save_dir: PathBuf, seed: u64, lr: f64) -> RunConfig {
    let mut cfg = RunConfig::default();
    cfg.train.data_dir = args.data_dir.clone();
    cfg.train.save_dir = save_dir;
    cfg.train.epochs = args.epochs;
    cfg.train.seed = seed;
    cfg.train.lr = lr;
    cfg.train.device = args.device;
    cfg.train.threads = args.threads;
    cfg.train.geometry = GeometrySchedule::Off;
    cfg.train.plots = false;
    cfg.wandb.use_wandb = false;
    cfg
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    trainer::tune_allocator();
    let args = parse_args()?;
    let tmp = tempfile::tempdir()?;
    let member = |name: &str, i: usize| {
        config(
            &args,
            tmp.path().join(format!("{name}_{i}")),
            42 + i as u64,
            1e-4 * (1 + i) as f64,
        )
    };
    let quiet = || RunOptions {
        quiet: true,
        ..Default::default()
    };
    // Generates the dataset if needed and warms libtorch up, outside the timings.
    let mut warm = member("warmup", 0);
    warm.train.epochs = 1;
    trainer::run(warm, quiet())?;

    let started = Instant::now();
    let single = trainer::run(member("single", 0), quiet())?;
    let t_single = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let batched =
        trainer::run_members((0..args.k).map(|i| member("batched", i)).collect(), quiet())?
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
    let t_batched = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut sequential = Vec::new();
    for i in 0..args.k {
        sequential.push(trainer::run(member("sequential", i), quiet())?);
    }
    let t_sequential = started.elapsed().as_secs_f64();

    let report = |name: &str, k: usize, seconds: f64, s: &trainer::RunSummary| {
        println!(
            "{}",
            serde_json::json!({
                "case": name,
                "runs": k,
                "epochs": args.epochs,
                "steps_per_run": s.global_step,
                "seconds": seconds,
                "seconds_per_run": seconds / k as f64,
                "train_seconds": s.train_seconds,
                "eval_seconds": s.eval_seconds,
                "final_macro_ce": s.final_eval.as_ref().map(|e| e.macro_ce),
            })
        );
    };
    report("separate_1", 1, t_single, &single);
    if let Some(s) = batched.first() {
        report("batched", args.k, t_batched, s);
    }
    if let Some(s) = sequential.first() {
        report("sequential", args.k, t_sequential, s);
    }
    // The batched members and the sequential runs are the same experiments.
    for (i, (b, s)) in batched.iter().zip(&sequential).enumerate() {
        if let (Some(x), Some(y)) = (&b.final_eval, &s.final_eval) {
            println!(
                "member {i}: final macro CE batched {:.6} vs separate {:.6}",
                x.macro_ce, y.macro_ce
            );
        }
    }
    println!(
        "K={}: batched {t_batched:.2} s vs {} separate runs {t_sequential:.2} s ({:.2}x); one run {t_single:.2} s",
        args.k,
        args.k,
        t_sequential / t_batched.max(1e-9)
    );
    Ok(())
}
