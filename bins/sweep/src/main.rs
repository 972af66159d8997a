//! `sweep`: runs sweeps of the functor experiment and reproduces the paper's figures.
//!
//! Glue only: parse flags, read the sweep file, call the `sweep` library, print a table.
//!
//! ```text
//! sweep run <FILE> [--jobs N] [--ensemble K] [--dry-run]
//!                                                  all experiments, N processes side by side,
//!                                                  up to K compatible ones batched per process
//! sweep run-one <FILE> --index I                   experiment I (a Slurm array task)
//! sweep run-batch <FILE> --batch I                 batch I of a batched Slurm array
//! sweep slurm <FILE> [--dry-run] [resources]       write the sbatch job-array script
//! sweep reproduce <FIGURE> [--scale small|full]    run a paper figure's sweep and draw it
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use sweep::runner::shell_line;
use sweep::{Layout, RunOptions, Sweep, SweepSpec};

/// Grid and random sweeps over the experiment's configuration keys, run as `train` processes.
#[derive(Debug, Parser)]
#[command(name = "sweep", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run every experiment of a sweep file (finished ones are skipped).
    Run {
        /// The sweep file.
        file: PathBuf,
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        exec: Exec,
        /// List the experiments and their `train` commands; run nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Run exactly one experiment, by index (what a Slurm array task runs).
    RunOne {
        /// The sweep file.
        file: PathBuf,
        /// Experiment index (as listed by `--dry-run`).
        #[arg(long)]
        index: usize,
        #[command(flatten)]
        common: Common,
        /// libtorch threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// The `train` executable [default: next to this program, else on PATH].
        #[arg(long, env = "SWEEP_TRAIN_BIN")]
        train_bin: Option<PathBuf>,
    },
    /// Run exactly one batch of a batched job array (what its Slurm array task runs): the
    /// batch's experiments as one `train --ensemble` process.
    RunBatch {
        /// The sweep file.
        file: PathBuf,
        /// Batch index (as listed in the script `sweep slurm` writes).
        #[arg(long)]
        batch: usize,
        #[command(flatten)]
        common: Common,
        /// libtorch threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// The `train` executable [default: next to this program, else on PATH].
        #[arg(long, env = "SWEEP_TRAIN_BIN")]
        train_bin: Option<PathBuf>,
        /// Most experiments per batch; must equal the value the script was written with.
        #[arg(long, default_value_t = sweep::runner::DEFAULT_ENSEMBLE)]
        ensemble: usize,
    },
    /// Write a Slurm job-array script: one task per batch of experiments that train together
    /// (`--ensemble`, default 8), or one per experiment with `--ensemble 1`.
    Slurm {
        /// The sweep file.
        file: PathBuf,
        #[command(flatten)]
        common: Common,
        /// Print the script instead of writing it (and generate no dataset).
        #[arg(long)]
        dry_run: bool,
        /// Where to write the script [default: <out>/<sweep>/slurm/<sweep>.sbatch].
        #[arg(long)]
        script: Option<PathBuf>,
        /// CPUs per task (also the libtorch threads of each run).
        #[arg(long, default_value_t = 2)]
        cpus_per_task: usize,
        /// Memory per task.
        #[arg(long, default_value = "8G")]
        mem: String,
        /// Time limit per task.
        #[arg(long, default_value = "04:00:00")]
        time: String,
        /// GPUs per task (`--gres=gpu:N`).
        #[arg(long, default_value_t = 0)]
        gpus: usize,
        /// Slurm partition.
        #[arg(long)]
        partition: Option<String>,
        /// At most this many tasks at once.
        #[arg(long)]
        max_parallel: Option<usize>,
        /// Extra line for the script header, verbatim (repeatable), e.g.
        /// `--sbatch-line '#SBATCH --account=abc'`.
        #[arg(long = "sbatch-line", value_name = "LINE")]
        sbatch_lines: Vec<String>,
        /// The `train` executable the tasks run [default: next to this program].
        #[arg(long, env = "SWEEP_TRAIN_BIN")]
        train_bin: Option<PathBuf>,
        /// Most experiments one task trains together as a batched ensemble; 1 (or 0): one task
        /// per experiment.
        #[arg(long, default_value_t = sweep::runner::DEFAULT_ENSEMBLE)]
        ensemble: usize,
    },
    /// Run a paper figure's sweep (configs/paper/<FIGURE>.toml) and draw it.
    Reproduce {
        /// Figure name (e.g. fig3-batch) or a sweep file with a [reproduce] table.
        figure: String,
        /// `full` (the paper's setting, for a GPU) or a shrink the file defines (`small`).
        #[arg(long, default_value = "full")]
        scale: String,
        /// Root of the run directories.
        #[arg(long, default_value = "runs/paper")]
        out: PathBuf,
        /// Root of the dataset cache.
        #[arg(long, default_value = "data/cache")]
        cache: PathBuf,
        /// Set a configuration key for every experiment, KEY=VALUE (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Training seeds to run instead of the figure's, e.g. `--seeds 1,2,3`.
        #[arg(long, value_delimiter = ',')]
        seeds: Option<Vec<u64>>,
        #[command(flatten)]
        exec: Exec,
        /// List the experiments; run and draw nothing.
        #[arg(long)]
        dry_run: bool,
        /// Only draw the figure from runs already there.
        #[arg(long = "plots-only", alias = "plot-only")]
        plot_only: bool,
    },
}

#[derive(Debug, Args)]
struct Common {
    /// A shrink defined in the file's [reproduce.scale.*] tables, or `full`.
    #[arg(long, default_value = "full")]
    scale: String,
    /// Root of the run directories (`<out>/<sweep>/<experiment>`).
    #[arg(long, default_value = "runs/sweeps")]
    out: PathBuf,
    /// Root of the dataset cache.
    #[arg(long, default_value = "data/cache")]
    cache: PathBuf,
    /// Set a configuration key for every experiment, KEY=VALUE (repeatable); the sweep then
    /// runs under a name of its own (`<name>+<overrides>`).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Training seeds to run instead of the file's, e.g. `--seeds 1,2,3`.
    #[arg(long, value_delimiter = ',')]
    seeds: Option<Vec<u64>>,
}

#[derive(Debug, Args)]
struct Exec {
    /// Experiments run side by side.
    #[arg(long, short, default_value_t = 1)]
    jobs: usize,
    /// libtorch threads per run [default: max(1, cores / jobs)].
    #[arg(long)]
    threads: Option<usize>,
    /// The `train` executable [default: next to this program, else on PATH].
    #[arg(long, env = "SWEEP_TRAIN_BIN")]
    train_bin: Option<PathBuf>,
    /// Most experiments trained together as one batched ensemble (experiments whose
    /// configurations differ only in seed, lr, weight_decay, warmup_steps, optimizer, logging);
    /// 1 (or 0) runs each experiment on its own.
    #[arg(long, default_value_t = sweep::runner::DEFAULT_ENSEMBLE)]
    ensemble: usize,
}

fn load(file: &Path, common: &Common) -> Result<Sweep> {
    let spec = SweepSpec::load(file)?
        .scaled(&common.scale)?
        .with_overrides(&common.set, common.seeds.clone())?;
    let layout = Layout {
        out_root: common.out.clone(),
        cache_root: common.cache.clone(),
    };
    Ok(Sweep::new(spec, layout)?)
}

/// `train` next to this executable (cargo puts both in target/<profile>/), else on PATH.
fn default_train_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("train")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("train"))
}

fn run_options(
    train_bin: Option<PathBuf>,
    jobs: usize,
    threads: Option<usize>,
    ensemble: usize,
) -> RunOptions {
    let mut o = RunOptions::new(train_bin.unwrap_or_else(default_train_bin), jobs);
    o.threads = threads;
    o.ensemble = ensemble;
    o.verbose = true;
    // The first SIGINT/SIGTERM/SIGHUP: no further experiment starts, and the running `train`
    // processes are told to stop (they checkpoint where they stand); a restarted sweep resumes
    // them. Children also die with this process if it is killed outright.
    match signals::install(
        "sweep",
        "starting no further experiment; the running ones write a checkpoint and stop",
    ) {
        Ok(stop) => o.stop = Some(stop.flag()),
        Err(e) => eprintln!("warning: no signal handlers ({e}); Ctrl-C stops without checkpoints"),
    }
    o
}

fn print_plan(sweep: &Sweep, opts: &RunOptions) {
    println!(
        "sweep `{}` (scale {}): {} experiments, runs in {}",
        sweep.spec.name,
        sweep.spec.scale,
        sweep.experiments.len(),
        sweep.dir().display()
    );
    let desc = sweep::reproduce::sweep_scale_description(sweep);
    if !desc.is_empty() {
        println!("scale {}: {desc}", sweep.spec.scale);
    }
    let threads = opts.threads_per_job();
    for group in sweep::runner::plan(sweep, opts) {
        match group[..] {
            [e] => {
                println!("[{}] {}", e.index, e.name);
                match &e.invalid {
                    Some(reason) => println!("    invalid: {reason}"),
                    None => println!(
                        "    {}",
                        shell_line(&opts.train_bin, &sweep.train_args(e, threads))
                    ),
                }
            }
            _ => {
                println!(
                    "batched ({} runs, {threads} thread{}):",
                    group.len(),
                    if threads == 1 { "" } else { "s" }
                );
                for e in &group {
                    println!("[{}] {}", e.index, e.name);
                }
                println!(
                    "    {}",
                    shell_line(&opts.train_bin, &sweep::runner::group_args(&group))
                );
            }
        }
    }
}

fn finish(outcomes: &[sweep::Outcome]) -> ExitCode {
    print!("{}", sweep::summary_table(outcomes));
    if outcomes.iter().all(|o| o.status.is_complete()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Cmd::Run {
            file,
            common,
            exec,
            dry_run,
        } => {
            let sweep = load(&file, &common)?;
            let opts = run_options(exec.train_bin, exec.jobs, exec.threads, exec.ensemble);
            if dry_run {
                print_plan(&sweep, &opts);
                return Ok(ExitCode::SUCCESS);
            }
            let outcomes = sweep::run_sweep(&sweep, &opts)?;
            Ok(finish(&outcomes))
        }
        Cmd::RunOne {
            file,
            index,
            common,
            threads,
            train_bin,
        } => {
            let sweep = load(&file, &common)?;
            let opts = run_options(train_bin, 1, threads, 1);
            let outcome = sweep::run_one(&sweep, index, &opts)?;
            Ok(finish(std::slice::from_ref(&outcome)))
        }
        Cmd::RunBatch {
            file,
            batch,
            common,
            threads,
            train_bin,
            ensemble,
        } => {
            let sweep = load(&file, &common)?;
            let opts = run_options(train_bin, 1, threads, ensemble);
            let outcomes = sweep::run_batch(&sweep, batch, &opts)?;
            Ok(finish(&outcomes))
        }
        Cmd::Slurm {
            file,
            common,
            dry_run,
            script,
            cpus_per_task,
            mem,
            time,
            gpus,
            partition,
            max_parallel,
            sbatch_lines,
            train_bin,
            ensemble,
        } => {
            let sweep = load(&file, &common)?;
            let workdir = std::env::current_dir().context("reading the working directory")?;
            let abs = |p: PathBuf| if p.is_absolute() { p } else { workdir.join(p) };
            let options = sweep::slurm::SlurmOptions {
                cpus_per_task,
                mem,
                time,
                gpus,
                partition,
                max_parallel,
                extra_lines: sbatch_lines,
                sweep_bin: abs(std::env::current_exe().context("locating this program")?),
                train_bin: abs(train_bin.unwrap_or_else(default_train_bin)),
                workdir: workdir.clone(),
                scale: common.scale.clone(),
                ensemble,
            };
            let text = sweep::slurm::script(&sweep, &file, &options);
            if dry_run {
                print!("{text}");
                return Ok(ExitCode::SUCCESS);
            }
            let failed = sweep::runner::prepare_datasets(&sweep, true);
            for (dir, reason) in &failed {
                eprintln!("warning: dataset {} failed: {reason}", dir.display());
            }
            let logs = sweep.dir().join("slurm");
            std::fs::create_dir_all(&logs)
                .with_context(|| format!("creating {}", logs.display()))?;
            let path = script.unwrap_or_else(|| logs.join(format!("{}.sbatch", sweep.spec.name)));
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            println!(
                "wrote {} ({} array tasks); submit with: sbatch {}",
                path.display(),
                sweep::runner::batches(&sweep, ensemble.max(1)).len(),
                path.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Reproduce {
            figure,
            scale,
            out,
            cache,
            set,
            seeds,
            exec,
            dry_run,
            plot_only,
        } => {
            let file =
                sweep::reproduce::figure_file(&figure, Path::new(sweep::reproduce::PAPER_DIR))?;
            let common = Common {
                scale: scale.clone(),
                out,
                cache,
                set,
                seeds,
            };
            let sweep = load(&file, &common)?;
            if sweep.spec.reproduce.is_none() {
                bail!("{}: no [reproduce] table", file.display());
            }
            let opts = run_options(exec.train_bin, exec.jobs, exec.threads, exec.ensemble);
            if dry_run {
                print_plan(&sweep, &opts);
                return Ok(ExitCode::SUCCESS);
            }
            let desc = sweep::reproduce::sweep_scale_description(&sweep);
            if !desc.is_empty() {
                eprintln!("scale {scale}: {desc}");
            }
            let outcomes = if plot_only {
                sweep::runner::recorded_outcomes(&sweep)
            } else {
                sweep::run_sweep(&sweep, &opts)?
            };
            if !outcomes.is_empty() {
                print!("{}", sweep::summary_table(&outcomes));
            }
            let summary = sweep::reproduce::draw(&sweep, &outcomes)?;
            println!("{}", summary.title);
            println!(
                "onset = first step where the mean over seeds of {} ≥ {}",
                summary.onset_metric, summary.onset_threshold
            );
            for g in &summary.groups {
                let fmt = |v: Option<u64>| v.map_or("none".to_string(), |s| s.to_string());
                println!(
                    "  {:<10} seeds {}  onset {:>6}  (per seed {})  final {}  max {}  paper {}",
                    g.value,
                    g.seeds,
                    fmt(g.onset_step),
                    g.onset_per_seed
                        .iter()
                        .map(|o| fmt(*o))
                        .collect::<Vec<_>>()
                        .join("/"),
                    g.final_mean.map_or("-".into(), |v| format!("{v:.2}")),
                    g.max_mean.map_or("-".into(), |v| format!("{v:.2}")),
                    g.paper_onset.map_or("-".into(), |v| format!("~{v}")),
                );
            }
            println!("paper: {}", summary.paper);
            for f in &summary.figures {
                println!("figure: {}", sweep.dir().join(f).display());
            }
            let wants_pca = sweep.spec.reproduce.as_ref().is_some_and(|r| r.pca);
            if wants_pca && !summary.figures.iter().any(|f| f.starts_with("figure-pca")) {
                println!("no PCA figure: no run has a pca.jsonl yet");
            }
            println!("summary: {}", sweep.dir().join("summary.json").display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    signals::quiet_broken_pipe();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", run_config::error_text(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}
