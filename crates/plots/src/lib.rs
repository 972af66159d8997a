//! Plots and HTML reports of training runs, with no libtorch and no system font.
//!
//! A run directory (written by the trainer) holds `metrics.jsonl` (one JSON object per
//! event: batch rows, epoch rows with the per-fact-type evaluation, `geom/*` geometry rows),
//! `config.toml` and optionally `pca.jsonl` (2-D PCA of entity embeddings at chosen steps). This
//! crate turns it into the pictures of the paper's analysis and a report page.
//!
//! # Overview
//! - [`RunMetrics`]: `metrics.jsonl` read into one [`Series`] of `(global_step, value)` points per
//!   key, plus the last evaluation row. Every key is optional and unknown keys are kept, so runs of
//!   earlier and later versions read alike; a line that is not a JSON object is an error naming the
//!   file and line. [`read_pca`] reads `pca.jsonl` into [`PcaSnapshot`]s.
//! - Plot functions, each writing `<stem>.svg` and `<stem>.png` ([`PlotFiles`]):
//!   [`accuracy_plot`] (Fig. 1B), [`loss_plot`], [`energy_plot`] (Fig. 6a), [`geometry_plot`],
//!   [`pca_plot`] (Fig. 7), [`overlay_plot`] (one curve per run) and [`sweep_plot`] (Figs. 2-4:
//!   [`SweepPanel`]s of [`SweepGroup`]s, mean over seeds with a band from [`aggregate`], onsets as
//!   [`OnsetMarker`]s).
//! - [`write_run_plots`] / [`run_plots`]: every plot a run has data for, into `<run>/plots/`.
//! - [`report`]: one HTML page over one or more runs (overlays, final tables, configs).
//!
//! # Rendering
//! Figures are drawn by a small internal SVG engine (axes with linear or log ticks, legends placed
//! outside the plotting area so they never hide curves). Text is DejaVu Sans; the PNG is the same
//! SVG rasterised by resvg at [`PNG_SCALE`] with the font loaded from the `dejavu` crate's bytes,
//! so output does not depend on the fonts a machine has.
//!
//! All errors are [`PlotError`].

#![warn(missing_docs)]

mod chart;
mod error;
mod figures;
mod render;
mod report;
mod series;

pub use error::{PlotError, Result};
pub use figures::{
    BandKind, OnsetMarker, SweepGroup, SweepPanel, accuracy_plot, aggregate, energy_plot,
    geometry_plot, loss_plot, metric_label, overlay_plot, pca_plot, sweep_plot,
};
pub use render::{PNG_SCALE, PlotFiles};
pub use report::{
    CONFIG_FILE, METRICS_FILE, NamedPlot, OVERLAY_KEYS, PCA_FILE, PLOTS_DIR, ReportSummary,
    find_runs, report, run_plots, write_run_plots,
};
pub use series::{
    PcaArrow, PcaPoint, PcaSnapshot, RunMetrics, Series, fact_type_names, metrics_path, read_pca,
};
