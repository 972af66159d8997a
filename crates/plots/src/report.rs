//! Per-run plot sets and the HTML report over one or more run directories.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use run_config::keys::{self, TypeMetric, geom};

use crate::chart::esc;
use crate::error::{PlotError, Result, io_err};
use crate::figures::{
    BandKind, SweepGroup, SweepPanel, accuracy_plot, energy_plot, geometry_plot, loss_plot,
    metric_label, pca_plot, sweep_plot,
};
use crate::render::PlotFiles;
use crate::series::{RunMetrics, read_pca};

/// File names inside a run directory.
pub const METRICS_FILE: &str = "metrics.jsonl";
/// The resolved config of a run.
pub const CONFIG_FILE: &str = "config.toml";
/// Optional PCA snapshots of a run.
pub const PCA_FILE: &str = "pca.jsonl";
/// Subdirectory of a run that receives its plots.
pub const PLOTS_DIR: &str = "plots";

/// Metrics overlaid (one curve per run) when a report covers several runs.
pub const OVERLAY_KEYS: [&str; 6] = [
    keys::OOD_ANALOGICAL_ACC,
    keys::NEAR_OOD_COMPOSITIONAL_ACC,
    keys::TRAIN_ACC_LAST,
    keys::VAL_MACRO_ACC,
    keys::VAL_MACRO_CE,
    geom::DIRICHLET_ENERGY_HEAD,
];

/// A plot written for a report, with the caption it is shown under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPlot {
    /// Short caption.
    pub caption: String,
    /// The PNG and SVG files.
    pub files: PlotFiles,
}

/// What [`report`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportSummary {
    /// The HTML page.
    pub html: PathBuf,
    /// Every PNG and SVG the page shows or links to.
    pub plots: Vec<PathBuf>,
}

fn run_label(run: &Path) -> String {
    run.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| run.display().to_string())
}

/// Short, distinct names of runs: each path below the directory all of them share (a lone run:
/// its directory name).
fn run_labels(runs: &[PathBuf]) -> Vec<String> {
    if runs.len() < 2 {
        return runs.iter().map(|r| run_label(r)).collect();
    }
    let parts: Vec<Vec<_>> = runs.iter().map(|r| r.components().collect()).collect();
    let shortest = parts.iter().map(Vec::len).min().unwrap_or(0);
    let common = (0..shortest)
        .take_while(|&i| parts.iter().all(|p| p[i] == parts[0][i]))
        .count();
    parts
        .iter()
        .zip(runs)
        .map(|(p, r)| {
            let rest: PathBuf = p[common..].iter().collect();
            if rest.as_os_str().is_empty() {
                r.display().to_string()
            } else {
                rest.display().to_string()
            }
        })
        .collect()
}

/// Writes every plot the run has data for into `<run>/plots/` and returns them with captions.
/// Plots without data (e.g. geometry in runs of earlier versions) are skipped, not errors.
///
/// # Errors
/// [`PlotError::Io`] / [`PlotError::BadLine`] when `metrics.jsonl` is missing or broken,
/// [`PlotError::BadPca`] for a broken `pca.jsonl`, I/O and render errors while writing.
pub fn run_plots(run_dir: &Path) -> Result<Vec<NamedPlot>> {
    let metrics = RunMetrics::read_run(run_dir)?;
    let dir = run_dir.join(PLOTS_DIR);
    let name = run_label(run_dir);
    let mut out = Vec::new();
    let mut keep = |caption: &str, r: Result<PlotFiles>| -> Result<()> {
        match r {
            Ok(files) => {
                out.push(NamedPlot {
                    caption: caption.to_string(),
                    files,
                });
                Ok(())
            }
            Err(PlotError::NoData { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    };
    keep(
        "Accuracy per fact type (Fig. 1B)",
        accuracy_plot(
            &metrics,
            &format!("{name}: accuracy per fact type"),
            &dir.join("accuracy"),
        ),
    )?;
    keep(
        "Cross-entropy per fact type",
        loss_plot(
            &metrics,
            &format!("{name}: cross-entropy at the answer token"),
            &dir.join("loss"),
        ),
    )?;
    keep(
        "Dirichlet energy and OOD analogical accuracy (Fig. 6a)",
        energy_plot(
            &metrics,
            &format!("{name}: Dirichlet energy vs OOD analogical accuracy"),
            &dir.join("energy"),
        ),
    )?;
    keep(
        "Functor geometry",
        geometry_plot(
            &metrics,
            &format!("{name}: functor geometry"),
            &dir.join("geometry"),
        ),
    )?;
    let pca_path = [
        run_dir.join(PCA_FILE),
        run_dir.join(format!("{PCA_FILE}.gz")),
    ]
    .into_iter()
    .find(|p| p.is_file());
    if let Some(pca_path) = pca_path {
        let snaps = read_pca(&pca_path)?;
        keep(
            "Entity embeddings, PCA with functor pairs (Fig. 7)",
            pca_plot(&snaps, &format!("{name}: embedding PCA"), &dir.join("pca")),
        )?;
    }
    Ok(out)
}

/// Writes every plot the run has data for into `<run>/plots/` (PNG and SVG) and returns the
/// paths written.
///
/// # Errors
/// As [`run_plots`].
pub fn write_run_plots(run_dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(run_plots(run_dir)?
        .into_iter()
        .flat_map(|p| [p.files.png, p.files.svg])
        .collect())
}

fn fmt_cell(v: Option<f64>) -> String {
    match v {
        None => "–".to_string(),
        Some(v) if v.fract() == 0.0 && v.abs() < 1e9 => format!("{v:.0}"),
        Some(v) if v.abs() >= 1e4 || (v != 0.0 && v.abs() < 1e-3) => format!("{v:.3e}"),
        Some(v) => format!("{v:.4}"),
    }
}

fn final_table(s: &mut String, m: &RunMetrics) {
    let Some(row) = m.last_epoch_row() else {
        s.push_str("<p class=\"note\">No evaluation row (no <code>epoch</code> key) in the metrics log.</p>\n");
        return;
    };
    let get = |k: &str| row.get(k).copied();
    let _ = writeln!(
        s,
        "<p>Final evaluation: epoch {}, global step {}, macro CE {}, macro ACC {}.</p>",
        fmt_cell(get(keys::EPOCH)),
        fmt_cell(get(keys::GLOBAL_STEP)),
        fmt_cell(get(keys::VAL_MACRO_CE)),
        fmt_cell(get(keys::VAL_MACRO_ACC))
    );
    let mut types: Vec<String> = crate::series::fact_type_names()
        .map(str::to_string)
        .collect();
    for k in row.keys() {
        if let Some((TypeMetric::Acc, t)) = keys::parse_per_type(k)
            && !types.iter().any(|x| x == t)
        {
            types.push(t.to_string());
        }
    }
    types.retain(|t| {
        TypeMetric::ALL
            .iter()
            .any(|&c| row.contains_key(&keys::per_type_name(c, t)))
    });
    if types.is_empty() {
        return;
    }
    s.push_str("<table><thead><tr><th>fact type</th><th>CE</th><th>PPL</th><th>ACC</th><th>PROB</th><th>N</th></tr></thead><tbody>\n");
    for t in &types {
        let _ = write!(s, "<tr><td>{}</td>", esc(t));
        for c in TypeMetric::ALL {
            let _ = write!(s, "<td>{}</td>", fmt_cell(get(&keys::per_type_name(c, t))));
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</tbody></table>\n");
}

fn geometry_table(s: &mut String, m: &RunMetrics) {
    let rows: Vec<(&str, u64, f64)> = m
        .keys()
        .filter(|k| k.starts_with(geom::PREFIX))
        .filter_map(|k| m.get(k).and_then(|s| s.last()).map(|(x, v)| (k, x, v)))
        .collect();
    if rows.is_empty() {
        return;
    }
    s.push_str("<h3>Last geometry values</h3>\n<table><thead><tr><th>metric</th><th>step</th><th>value</th></tr></thead><tbody>\n");
    for (k, x, v) in rows {
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td>{x}</td><td>{}</td></tr>",
            esc(k),
            fmt_cell(Some(v))
        );
    }
    s.push_str("</tbody></table>\n");
}

/// A figure with the PNG inside the page (a `data:` URI), so the page stands alone.
fn figure(s: &mut String, caption: &str, files: &PlotFiles) -> Result<()> {
    use base64::Engine as _;
    let png = std::fs::read(&files.png).map_err(io_err("read", &files.png))?;
    let _ = writeln!(
        s,
        "<figure><img src=\"data:image/png;base64,{}\" alt=\"{}\"><figcaption>{}</figcaption></figure>",
        base64::engine::general_purpose::STANDARD.encode(png),
        esc(caption),
        esc(caption)
    );
    Ok(())
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}\
table{border-collapse:collapse;margin:0.5em 0 1em}td,th{border:1px solid #ccc;padding:3px 9px;text-align:right}\
td:first-child,th:first-child{text-align:left}thead{background:#f3f3f3}\
figure{margin:1em 0}img{max-width:100%;border:1px solid #eee}figcaption{color:#555;font-size:0.9em}\
pre{background:#f7f7f7;padding:0.8em;overflow:auto;font-size:0.85em}.note{color:#777}\
section{border-top:2px solid #ddd;margin-top:2em}";

/// The run directories among `inputs`: a directory with a `metrics.jsonl` is a run; any other
/// directory (a sweep's, a folder of runs) contributes the runs below it (two levels deep).
///
/// # Errors
/// [`PlotError::Io`] naming an input that cannot be read, [`PlotError::NoRuns`] when an input is
/// a file or no input holds a run.
pub fn find_runs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    fn below(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
        if crate::series::metrics_path(dir).is_file() {
            out.push(dir.to_path_buf());
            return;
        }
        if depth == 0 {
            return;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut subdirs: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        subdirs.sort();
        for d in subdirs {
            below(&d, depth - 1, out);
        }
    }
    let mut runs = Vec::new();
    for input in inputs {
        match std::fs::metadata(input) {
            Ok(m) if m.is_dir() => below(input, 2, &mut runs),
            Ok(_) => {
                return Err(PlotError::NoRuns {
                    inputs: format!("{} (a file, not a directory)", input.display()),
                });
            }
            Err(e) => return Err(io_err("read", input)(e)),
        }
    }
    if runs.is_empty() {
        let inputs = if inputs.is_empty() {
            "no input".to_string()
        } else {
            inputs
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(PlotError::NoRuns { inputs });
    }
    Ok(runs)
}

/// Keys that identify a run rather than the experiment: two runs differing only in these are
/// the same experiment (the seed is the one that repeats it).
const IDENTITY_KEYS: [&str; 4] = ["save_dir", "run_name", "project", "data_dir"];

/// A run's configuration as flat `key = value` text (the W&B config's keys), or why it could
/// not be read.
fn flat_config(run: &Path) -> std::result::Result<BTreeMap<String, String>, String> {
    run_config::RunConfig::from_file(&run.join(CONFIG_FILE))
        .map(|c| {
            c.flat()
                .into_iter()
                .filter(|(k, _)| !IDENTITY_KEYS.contains(&k.as_str()))
                .map(|(k, v)| (k, v.to_string()))
                .collect()
        })
        .map_err(|e| e.to_string())
}

/// Runs grouped into experiments (configurations equal but for the seed and the run's
/// identity), in the order of their first run; each group is labelled by the values of the keys
/// that differ between groups.
fn seed_groups(
    labels: &[String],
    configs: &[BTreeMap<String, String>],
) -> Vec<(String, Vec<usize>)> {
    let without_seed = |c: &BTreeMap<String, String>| {
        let mut c = c.clone();
        c.remove("seed");
        c
    };
    let mut groups: Vec<(BTreeMap<String, String>, Vec<usize>)> = Vec::new();
    for (i, c) in configs.iter().enumerate() {
        let key = without_seed(c);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(i),
            None => groups.push((key, vec![i])),
        }
    }
    let keys: Vec<String> = differing(&groups.iter().map(|(c, _)| c.clone()).collect::<Vec<_>>());
    groups
        .into_iter()
        .map(|(c, members)| {
            let label = if keys.is_empty() {
                if members.len() == 1 {
                    labels[members[0]].clone()
                } else {
                    "all runs".to_string()
                }
            } else {
                keys.iter()
                    .map(|k| format!("{k} = {}", c.get(k).map_or("unset", String::as_str)))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            (label, members)
        })
        .collect()
}

/// The keys whose values are not the same in every configuration.
fn differing(configs: &[BTreeMap<String, String>]) -> Vec<String> {
    let mut all: Vec<&String> = configs.iter().flat_map(|c| c.keys()).collect();
    all.sort();
    all.dedup();
    all.into_iter()
        .filter(|k| configs.iter().any(|c| c.get(*k) != configs[0].get(*k)))
        .cloned()
        .collect()
}

/// Writes the HTML report `out` over the runs found in `inputs` (run directories, or sweep
/// directories holding runs): one self-contained file, its images inside it. For each run its
/// plots (also written into `<run>/plots/`), its final evaluation table, its last geometry
/// values and its config; with several runs, first a comparison: the configuration keys that
/// differ between runs, the final values, and one plot per key metric with one curve per
/// experiment (runs that differ only in their seed are one experiment: the curve is their mean,
/// the band spans their minimum to maximum).
///
/// # Errors
/// [`PlotError::NoRuns`] when no run is found; the errors of [`run_plots`]; I/O errors.
pub fn report(inputs: &[PathBuf], out: &Path) -> Result<ReportSummary> {
    let runs = find_runs(inputs)?;
    let base = match out.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(p) => p.to_path_buf(),
        None => PathBuf::from("."),
    };
    let labels = run_labels(&runs);
    let mut metrics = Vec::new();
    for r in &runs {
        metrics.push(RunMetrics::read_run(r)?);
    }
    let read_configs: Vec<_> = runs.iter().map(|r| flat_config(r)).collect();
    let configs: Vec<BTreeMap<String, String>> = read_configs
        .iter()
        .map(|c| c.clone().unwrap_or_default())
        .collect();
    // Only after every run has read cleanly, so a typo in a path leaves nothing behind.
    std::fs::create_dir_all(&base).map_err(io_err("create dir", &base))?;
    let mut plots = Vec::new();
    let mut html = String::new();
    let title = if runs.len() == 1 {
        format!("Run report: {}", labels[0])
    } else {
        format!("Report over {} runs", runs.len())
    };
    let _ = writeln!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>\n<h1>{}</h1>",
        esc(&title),
        esc(&title)
    );
    html.push_str("<ul>\n");
    for (l, r) in labels.iter().zip(&runs) {
        let _ = writeln!(
            html,
            "<li><a href=\"#{}\">{}</a> <span class=\"note\">{}</span></li>",
            esc(&anchor(l)),
            esc(l),
            esc(&r.display().to_string())
        );
    }
    html.push_str("</ul>\n");

    if runs.len() > 1 {
        html.push_str("<section><h2>Comparison</h2>\n");
        for (l, c) in labels.iter().zip(&read_configs) {
            if let Err(e) = c {
                let _ = writeln!(
                    html,
                    "<p class=\"note\">{}: configuration not compared ({})</p>",
                    esc(l),
                    esc(e)
                );
            }
        }
        differing_table(&mut html, &labels, &configs);
        comparison_table(&mut html, &labels, &metrics);
        let groups = seed_groups(&labels, &configs);
        html.push_str("<h3>Experiments (runs equal but for the seed)</h3>\n<ul>\n");
        for (label, members) in &groups {
            let names: Vec<&str> = members.iter().map(|&i| labels[i].as_str()).collect();
            let _ = writeln!(html, "<li>{}: {}</li>", esc(label), esc(&names.join(", ")));
        }
        html.push_str("</ul>\n");
        let scratch = tempfile_dir(&base)?;
        for key in OVERLAY_KEYS {
            let panel = SweepPanel {
                title: metric_label(key),
                y_label: metric_label(key),
                groups: groups
                    .iter()
                    .map(|(label, members)| SweepGroup {
                        label: format!(
                            "{label} ({} run{})",
                            members.len(),
                            if members.len() == 1 { "" } else { "s" }
                        ),
                        runs: members
                            .iter()
                            .filter_map(|&i| metrics[i].get(key).cloned())
                            .collect(),
                    })
                    .filter(|g| !g.runs.is_empty())
                    .collect(),
                markers: Vec::new(),
                band: BandKind::MinMax,
                y_range: None,
            };
            if panel.groups.is_empty() {
                continue;
            }
            let files = sweep_plot(&metric_label(key), &[panel], &scratch.join(sanitize(key)))?;
            figure(
                &mut html,
                &format!(
                    "{}: one curve per experiment, the mean over its seeds; the band spans their minimum to maximum",
                    metric_label(key)
                ),
                &files,
            )?;
        }
        let _ = std::fs::remove_dir_all(&scratch);
        html.push_str("</section>\n");
    }

    for ((l, r), m) in labels.iter().zip(&runs).zip(&metrics) {
        let _ = writeln!(
            html,
            "<section id=\"{}\"><h2>{}</h2><p class=\"note\">{}</p>",
            esc(&anchor(l)),
            esc(l),
            esc(&r.display().to_string())
        );
        final_table(&mut html, m);
        geometry_table(&mut html, m);
        for p in run_plots(r)? {
            figure(&mut html, &p.caption, &p.files)?;
            plots.extend([p.files.png, p.files.svg]);
        }
        let cfg = r.join(CONFIG_FILE);
        html.push_str("<h3>Config</h3>\n");
        match std::fs::read_to_string(&cfg) {
            Ok(text) => {
                let _ = writeln!(html, "<pre>{}</pre>", esc(&text));
            }
            Err(_) => {
                let _ = writeln!(
                    html,
                    "<p class=\"note\">No readable {}.</p>",
                    esc(&cfg.display().to_string())
                );
            }
        }
        html.push_str("</section>\n");
    }
    html.push_str("</body></html>\n");
    std::fs::write(out, html).map_err(io_err("write", out))?;
    Ok(ReportSummary {
        html: out.to_path_buf(),
        plots,
    })
}

/// A fresh scratch directory beside the report for the comparison plots (removed once they are
/// inside the page).
fn tempfile_dir(base: &Path) -> Result<PathBuf> {
    let dir = base.join(format!(".report-plots-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(io_err("create dir", &dir))?;
    Ok(dir)
}

/// The configuration keys whose values differ between runs, one row per run.
fn differing_table(s: &mut String, labels: &[String], configs: &[BTreeMap<String, String>]) {
    let keys = differing(configs);
    if keys.is_empty() {
        s.push_str("<p class=\"note\">All runs have the same configuration.</p>\n");
        return;
    }
    s.push_str("<h3>Configuration keys that differ</h3>\n<table><thead><tr><th>run</th>");
    for k in &keys {
        let _ = write!(s, "<th>{}</th>", esc(k));
    }
    s.push_str("</tr></thead><tbody>\n");
    for (l, c) in labels.iter().zip(configs) {
        let _ = write!(s, "<tr><td>{}</td>", esc(l));
        for k in &keys {
            let _ = write!(s, "<td>{}</td>", esc(c.get(k).map_or("–", String::as_str)));
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</tbody></table>\n");
}

fn comparison_table(s: &mut String, labels: &[String], metrics: &[RunMetrics]) {
    let cols = [
        keys::VAL_MACRO_ACC,
        keys::NEAR_OOD_COMPOSITIONAL_ACC,
        keys::OOD_ANALOGICAL_ACC,
        keys::GLOBAL_STEP,
    ];
    s.push_str("<h3>Final values</h3>\n<table><thead><tr><th>run</th>");
    for c in cols {
        let _ = write!(s, "<th>{}</th>", esc(&metric_label(c)));
    }
    s.push_str("</tr></thead><tbody>\n");
    for (l, m) in labels.iter().zip(metrics) {
        let _ = write!(s, "<tr><td>{}</td>", esc(l));
        for c in cols {
            let v = m.last_epoch_row().and_then(|r| r.get(c).copied());
            let _ = write!(s, "<td>{}</td>", fmt_cell(v));
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</tbody></table>\n");
}

fn sanitize(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn anchor(label: &str) -> String {
    format!("run-{}", sanitize(label))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_the_paths_below_the_shared_directory() {
        let runs: Vec<PathBuf> = ["/s/a/seed_1", "/s/a/seed_2", "/s/b/seed_1"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(run_labels(&runs), ["a/seed_1", "a/seed_2", "b/seed_1"]);
        assert_eq!(run_labels(&runs[..1]), ["seed_1"]);
        let same = [PathBuf::from("runs/x"), PathBuf::from("runs/x")];
        assert_eq!(run_labels(&same), ["runs/x", "runs/x"]);
    }

    #[test]
    fn cells_format() {
        assert_eq!(fmt_cell(Some(120.0)), "120");
        assert_eq!(fmt_cell(Some(0.123456)), "0.1235");
        assert_eq!(fmt_cell(None), "–");
    }

    #[test]
    fn runs_differing_only_in_seed_form_one_group_named_by_what_differs() {
        let cfg = |lr: &str, seed: &str| {
            BTreeMap::from([
                ("lr".to_string(), lr.to_string()),
                ("seed".to_string(), seed.to_string()),
                ("epochs".to_string(), "5".to_string()),
            ])
        };
        let configs = [cfg("0.1", "1"), cfg("0.1", "2"), cfg("0.01", "1")];
        let labels: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let groups = seed_groups(&labels, &configs);
        assert_eq!(
            groups,
            vec![
                ("lr = 0.1".to_string(), vec![0, 1]),
                ("lr = 0.01".to_string(), vec![2])
            ]
        );
        assert_eq!(differing(&configs), vec!["lr", "seed"]);
        let same = [cfg("0.1", "1"), cfg("0.1", "2")];
        assert_eq!(
            seed_groups(&labels[..2], &same),
            vec![("all runs".to_string(), vec![0, 1])]
        );
    }
}
