//! `report`: plots and one self-contained HTML page from run directories or sweep directories.
//!
//! `report <dir>... [--out <file.html>] [--plots-only] [--dry-run]`. A directory with a
//! `metrics.jsonl` is a run; any other directory contributes the runs below it (a sweep's
//! experiments and seeds). Plots go into each `<run>/plots/`; the page defaults to
//! `DIR/report.html` for one directory and `./report.html` for several.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;

/// Turns run directories (metrics.jsonl, config.toml, pca.jsonl) into plots and an HTML report.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Run directories, or directories holding runs (a sweep's output directory).
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
    /// Where to write the HTML page [default: DIR/report.html for one directory, ./report.html for several].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Only write each run's plots into RUN/plots/, no HTML page.
    #[arg(long, alias = "plot-only")]
    plots_only: bool,
    /// Say which runs would be reported and where the page would go, and write nothing.
    #[arg(long)]
    dry_run: bool,
}

fn run(args: Args) -> anyhow::Result<()> {
    let runs = plots::find_runs(&args.dirs)?;
    let out = match (&args.out, args.dirs.as_slice()) {
        (Some(o), _) => o.clone(),
        (None, [one]) => one.join("report.html"),
        (None, _) => PathBuf::from("report.html"),
    };
    if args.dry_run {
        for r in &runs {
            println!("run {}", r.display());
        }
        if args.plots_only {
            println!("would write plots into RUN/plots/ of {} runs", runs.len());
        } else {
            println!("would write {} ({} runs)", out.display(), runs.len());
        }
        return Ok(());
    }
    if args.plots_only {
        for run in &runs {
            let files = plots::write_run_plots(run)
                .with_context(|| format!("writing plots of {}", run.display()))?;
            for f in files {
                println!("{}", f.display());
            }
        }
        return Ok(());
    }
    let summary = plots::report(&args.dirs, &out)
        .with_context(|| format!("writing report {}", out.display()))?;
    println!(
        "{} ({} runs; every image inside the page, each run's plots also in RUN/plots/)",
        summary.html.display(),
        runs.len()
    );
    Ok(())
}

fn main() -> ExitCode {
    signals::quiet_broken_pipe();
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", run_config::error_text(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}
