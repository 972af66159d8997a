//! Paper figures: a finished sweep drawn as the paper's panel, with onset estimates.

use std::path::{Path, PathBuf};

use plots::{BandKind, OnsetMarker, RunMetrics, Series, SweepGroup, SweepPanel};
use serde::Serialize;

use crate::error::{Result, SweepError, io_err};
use crate::experiment::Sweep;
use crate::runner::Outcome;
use crate::spec::Reproduce;

/// Directory searched for figure names (`fig3-batch` → `configs/paper/fig3-batch.toml`).
pub const PAPER_DIR: &str = "configs/paper";

/// The sweep file of a figure: `name` itself when it is a file, else `<paper_dir>/<name>.toml`.
///
/// # Errors
/// [`SweepError::Figure`] when neither exists.
pub fn figure_file(name: &str, paper_dir: &Path) -> Result<PathBuf> {
    let given = PathBuf::from(name);
    if given.is_file() {
        return Ok(given);
    }
    let path = paper_dir.join(format!("{name}.toml"));
    if path.is_file() {
        Ok(path)
    } else {
        Err(SweepError::Figure {
            name: name.into(),
            searched: path,
        })
    }
}

/// One curve of a reproduced figure, as written to `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupSummary {
    /// The swept value (text form), or the label for a single-curve figure.
    pub value: String,
    /// Seeds with data.
    pub seeds: usize,
    /// First step where the mean over seeds of the onset metric reaches the threshold.
    pub onset_step: Option<u64>,
    /// The same per seed.
    pub onset_per_seed: Vec<Option<u64>>,
    /// Mean over seeds at the last step.
    pub final_mean: Option<f64>,
    /// Largest mean over seeds.
    pub max_mean: Option<f64>,
    /// Step range covered.
    pub last_step: Option<u64>,
    /// The paper's onset for this value on the onset metric, when it reports one.
    pub paper_onset: Option<f64>,
}

/// `summary.json` of a reproduced figure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FigureSummary {
    /// Figure title.
    pub title: String,
    /// Sweep name (with the scale suffix).
    pub sweep: String,
    /// The scale.
    pub scale: String,
    /// How the scale shrinks the paper's setting (empty for `full`).
    pub scale_description: String,
    /// What the paper reports.
    pub paper: String,
    /// The onset metric.
    pub onset_metric: String,
    /// Its threshold.
    pub onset_threshold: f64,
    /// One entry per curve.
    pub groups: Vec<GroupSummary>,
    /// The sweep's outcomes.
    pub experiments: Vec<Outcome>,
    /// The figure files written beside `summary.json` (`figure.png`, `figure.svg`, and with
    /// `pca` the PCA's `figure-pca.png` and `.svg`).
    pub figures: Vec<String>,
}

/// Whether a metric is an accuracy (drawn on a 0–1 axis).
fn is_accuracy(metric: &str) -> bool {
    matches!(
        run_config::keys::parse_per_type(metric),
        Some((run_config::keys::TypeMetric::Acc, _))
    ) || metric == run_config::keys::TRAIN_ACC_LAST
        || metric == run_config::keys::VAL_MACRO_ACC
}

/// The y-axis label of a metric's panel: its kind in words.
fn axis_label(metric: &str) -> &'static str {
    use run_config::keys::{TypeMetric, geom, parse_per_type};
    match parse_per_type(metric) {
        Some((TypeMetric::Acc, _)) => "accuracy",
        Some((TypeMetric::Ce, _)) => "cross-entropy",
        Some((TypeMetric::Ppl, _)) => "perplexity",
        Some((TypeMetric::Prob, _)) => "target probability",
        Some((TypeMetric::N, _)) => "count",
        None if is_accuracy(metric) => "accuracy",
        None if metric == geom::DIRICHLET_ENERGY || metric == geom::DIRICHLET_ENERGY_HEAD => {
            "Dirichlet energy (0 aligned, 1 orthogonal)"
        }
        None => "value",
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// First step at which `points` reach `threshold`.
pub fn onset(points: &[(u64, f64)], threshold: f64) -> Option<u64> {
    points
        .iter()
        .find(|(_, v)| *v >= threshold)
        .map(|(s, _)| *s)
}

/// Draws `<sweep dir>/figure.{png,svg}` and writes `<sweep dir>/summary.json` from the runs of a
/// sweep with a `[reproduce]` table.
///
/// # Errors
/// [`SweepError::NotAFigure`] without `[reproduce]`; plot and I/O errors (a plot error when no
/// run has data).
pub fn draw(sweep: &Sweep, outcomes: &[Outcome]) -> Result<FigureSummary> {
    let r = sweep
        .spec
        .reproduce
        .as_ref()
        .ok_or_else(|| SweepError::NotAFigure {
            file: sweep.spec.file.clone(),
        })?;
    let groups = group_runs(sweep, r)?;
    let panels: Vec<SweepPanel> = r
        .metrics
        .iter()
        .map(|metric| SweepPanel {
            title: plots::metric_label(metric),
            y_label: axis_label(metric).into(),
            groups: groups
                .iter()
                .map(|(value, runs)| SweepGroup {
                    label: curve_label(r, value),
                    runs: runs.iter().filter_map(|m| m.get(metric).cloned()).collect(),
                })
                .collect(),
            markers: markers(r, metric, &groups),
            band: BandKind::MinMax,
            y_range: is_accuracy(metric).then_some((0.0, 1.0)),
        })
        .collect();
    let scale_description = sweep_scale_description(sweep);
    // A figure drawn at another scale or with overrides says so in its title.
    let mut title = r.title.clone();
    if sweep.spec.scale != "full" {
        title.push_str(&format!(" [scale {}]", sweep.spec.scale));
    }
    if !sweep.spec.overrides.is_empty() {
        title.push_str(&format!(" [{}]", sweep.spec.overrides.join(", ")));
    }
    let stem = sweep.dir().join("figure");
    let files = plots::sweep_plot(&title, &panels, &stem)?;
    let mut figures = vec![file_name(&files.png), file_name(&files.svg)];
    if r.pca {
        let first = sweep
            .experiments
            .iter()
            .flat_map(|e| {
                [
                    e.run_dir.join(plots::PCA_FILE),
                    e.run_dir.join(format!("{}.gz", plots::PCA_FILE)),
                ]
            })
            .find(|p| p.is_file());
        // No run with snapshots yet: the summary lists no PCA figure.
        if let Some(path) = first {
            let snaps = plots::read_pca(&path)?;
            let run = path
                .parent()
                .and_then(Path::file_name)
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let pca = plots::pca_plot(
                &snaps,
                &format!("{title}, run {run}"),
                &sweep.dir().join("figure-pca"),
            )?;
            figures.extend([file_name(&pca.png), file_name(&pca.svg)]);
        }
    }
    let summaries = groups
        .iter()
        .map(|(value, runs)| {
            let series: Vec<Series> = runs
                .iter()
                .filter_map(|m| m.get(&r.onset_metric).cloned())
                .collect();
            let agg = plots::aggregate(&series, BandKind::MinMax);
            let mean: Vec<(u64, f64)> = agg.iter().map(|(s, m, _, _)| (*s, *m)).collect();
            GroupSummary {
                value: value.clone(),
                seeds: series.len(),
                onset_step: onset(&mean, r.onset_threshold),
                onset_per_seed: series
                    .iter()
                    .map(|s| onset(&s.points, r.onset_threshold))
                    .collect(),
                final_mean: mean.last().map(|(_, v)| *v),
                max_mean: mean.iter().map(|(_, v)| *v).reduce(f64::max),
                last_step: mean.last().map(|(s, _)| *s),
                paper_onset: r
                    .markers
                    .iter()
                    .find(|m| {
                        m.metric == r.onset_metric && m.value.as_deref().is_none_or(|v| v == value)
                    })
                    .map(|m| m.step),
            }
        })
        .collect();
    let summary = FigureSummary {
        title,
        sweep: sweep.spec.name.clone(),
        scale: sweep.spec.scale.clone(),
        scale_description,
        paper: r.paper.clone(),
        onset_metric: r.onset_metric.clone(),
        onset_threshold: r.onset_threshold,
        groups: summaries,
        experiments: outcomes.to_vec(),
        figures,
    };
    let path = sweep.dir().join("summary.json");
    let text = serde_json::to_string_pretty(&summary).unwrap_or_default();
    std::fs::write(&path, text + "\n").map_err(io_err(&path))?;
    Ok(summary)
}

/// The description of the sweep's scale, from its `[reproduce.scale.<name>]` table.
pub fn sweep_scale_description(sweep: &Sweep) -> String {
    sweep
        .spec
        .reproduce
        .as_ref()
        .and_then(|r| r.scales.iter().find(|(n, _)| *n == sweep.spec.scale))
        .map(|(_, s)| s.description.clone())
        .unwrap_or_default()
}

fn curve_label(r: &Reproduce, value: &str) -> String {
    if r.group_by.is_some() {
        format!("{} = {value}", r.label)
    } else {
        r.label.clone()
    }
}

/// The metrics of the complete runs, grouped by the value of `group_by` in parameter order.
fn group_runs(sweep: &Sweep, r: &Reproduce) -> Result<Vec<(String, Vec<RunMetrics>)>> {
    let mut groups: Vec<(String, Vec<RunMetrics>)> = Vec::new();
    for e in &sweep.experiments {
        let value = match &r.group_by {
            Some(key) => e.value_of(key).unwrap_or_default(),
            None => r.label.clone(),
        };
        let slot = match groups.iter().position(|(v, _)| *v == value) {
            Some(i) => i,
            None => {
                groups.push((value, Vec::new()));
                groups.len() - 1
            }
        };
        // A finished run, or the published record of one (its metrics reach the last epoch).
        let path = plots::metrics_path(&e.run_dir);
        if !path.is_file() {
            continue;
        }
        let m = RunMetrics::read(&path)?;
        let epochs = e.config.train.epochs as u64;
        if crate::runner::is_finished(&e.run_dir, e.config.train.epochs)
            || m.last_epoch().is_some_and(|last| last >= epochs)
        {
            groups[slot].1.push(m);
        }
    }
    Ok(groups)
}

fn markers(r: &Reproduce, metric: &str, groups: &[(String, Vec<RunMetrics>)]) -> Vec<OnsetMarker> {
    r.markers
        .iter()
        .filter(|m| m.metric == metric)
        .map(|m| {
            let group = match &m.value {
                Some(v) => groups.iter().position(|(g, _)| g == v),
                None if groups.len() == 1 => Some(0),
                None => None,
            };
            let label = m.label.clone().unwrap_or_else(|| match &m.value {
                Some(v) => format!("paper {v}"),
                None => "paper".into(),
            });
            OnsetMarker {
                step: m.step,
                label,
                group,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn onset_is_the_first_step_at_threshold() {
        let p = [(1, 0.0), (10, 0.4), (20, 0.5), (30, 0.2), (40, 1.0)];
        assert_eq!(onset(&p, 0.5), Some(20));
        assert_eq!(onset(&p, 0.9), Some(40));
        assert_eq!(onset(&p, 1.1), None);
        assert_eq!(onset(&[], 0.5), None);
    }
}
