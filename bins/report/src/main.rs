//! `report`: plots and an HTML page from one or more run directories.
//!
//! `report <run_dir>... [--out <file.html>] [--plots-only]`. Plots go into each `<run>/plots/`;
//! the page defaults to `RUN/report.html` for one run and `./report.html` for several.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;

/// Turns run directories (metrics.jsonl, config.toml, pca.jsonl) into plots and an HTML report.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Run directories (each with a metrics.jsonl).
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// Where to write the HTML page [default: RUN/report.html for one run, ./report.html for several].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Only write each run's plots into RUN/plots/, no HTML page.
    #[arg(long)]
    plots_only: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.plots_only {
        for run in &args.runs {
            let files = plots::write_run_plots(run)
                .with_context(|| format!("writing plots of {}", run.display()))?;
            for f in files {
                println!("{}", f.display());
            }
        }
        return Ok(());
    }
    let out = match (&args.out, args.runs.as_slice()) {
        (Some(o), _) => o.clone(),
        (None, [one]) => one.join("report.html"),
        (None, _) => PathBuf::from("report.html"),
    };
    let summary = plots::report(&args.runs, &out)
        .with_context(|| format!("writing report {}", out.display()))?;
    println!(
        "{} ({} plot files)",
        summary.html.display(),
        summary.plots.len()
    );
    Ok(())
}
