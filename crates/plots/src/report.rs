//! Per-run plot sets and the HTML report over one or more run directories.

use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

use run_config::keys::{self, TypeMetric, geom};

use crate::chart::esc;
use crate::error::{PlotError, Result, io_err};
use crate::figures::{
    accuracy_plot, energy_plot, geometry_plot, loss_plot, metric_label, overlay_plot, pca_plot,
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

/// Writes every plot the run has data for into `<run>/plots/` and returns them with captions.
/// Plots without data (e.g. geometry in runs of earlier versions) are skipped, not errors.
///
/// # Errors
/// [`PlotError::Io`] / [`PlotError::BadLine`] when `metrics.jsonl` is missing or broken,
/// [`PlotError::BadPca`] for a broken `pca.jsonl`, I/O and render errors while writing.
pub fn run_plots(run_dir: &Path) -> Result<Vec<NamedPlot>> {
    let metrics = RunMetrics::read(&run_dir.join(METRICS_FILE))?;
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
    let pca_path = run_dir.join(PCA_FILE);
    if pca_path.is_file() {
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

/// `target` relative to the directory `base` (both made absolute first), with `/` separators as
/// HTML wants.
fn relative(target: &Path, base: &Path) -> Result<String> {
    let t = std::fs::canonicalize(target).map_err(io_err("resolve", target))?;
    let b = std::fs::canonicalize(base).map_err(io_err("resolve", base))?;
    let tc: Vec<Component> = t.components().collect();
    let bc: Vec<Component> = b.components().collect();
    let common = tc.iter().zip(&bc).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = vec!["..".to_string(); bc.len() - common];
    parts.extend(
        tc[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    Ok(parts.join("/"))
}

/// Percent-encodes what may not appear raw in a URL path (spaces, `#`, `?`, `%`, quotes …).
fn url_path(p: &str) -> String {
    let mut out = String::new();
    for b in p.bytes() {
        if b.is_ascii_alphanumeric() || b"/._-~+,=@".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
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

fn figure(s: &mut String, caption: &str, files: &PlotFiles, base: &Path) -> Result<()> {
    let png = url_path(&relative(&files.png, base)?);
    let svg = url_path(&relative(&files.svg, base)?);
    let _ = writeln!(
        s,
        "<figure><a href=\"{}\"><img src=\"{}\" alt=\"{}\"></a><figcaption>{} (<a href=\"{}\">SVG</a>)</figcaption></figure>",
        esc(&svg),
        esc(&png),
        esc(caption),
        esc(caption),
        esc(&svg)
    );
    Ok(())
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}\
table{border-collapse:collapse;margin:0.5em 0 1em}td,th{border:1px solid #ccc;padding:3px 9px;text-align:right}\
td:first-child,th:first-child{text-align:left}thead{background:#f3f3f3}\
figure{margin:1em 0}img{max-width:100%;border:1px solid #eee}figcaption{color:#555;font-size:0.9em}\
pre{background:#f7f7f7;padding:0.8em;overflow:auto;font-size:0.85em}.note{color:#777}\
section{border-top:2px solid #ddd;margin-top:2em}";

/// Writes the HTML report `out` over `runs`: for each run its plots (written into
/// `<run>/plots/`), its final evaluation table, its last geometry values and its config verbatim;
/// with several runs, first a comparison section with one overlay plot per key metric (written
/// into `<out stem>_files/` next to the page) and a table of final accuracies. Images are linked
/// by paths relative to the page.
///
/// # Errors
/// [`PlotError::NoRuns`] for an empty list; the errors of [`run_plots`]; I/O errors.
pub fn report(runs: &[PathBuf], out: &Path) -> Result<ReportSummary> {
    if runs.is_empty() {
        return Err(PlotError::NoRuns);
    }
    let base = match out.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(p) => p.to_path_buf(),
        None => PathBuf::from("."),
    };
    let mut labels: Vec<String> = runs.iter().map(|r| run_label(r)).collect();
    for i in 0..labels.len() {
        if labels.iter().filter(|l| **l == labels[i]).count() > 1 {
            labels[i] = runs[i].display().to_string();
        }
    }
    let mut metrics = Vec::new();
    for r in runs {
        metrics.push(RunMetrics::read(&r.join(METRICS_FILE))?);
    }
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
    for (l, r) in labels.iter().zip(runs) {
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
        comparison_table(&mut html, &labels, &metrics);
        let stem = out
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "report".to_string());
        let dir = base.join(format!("{stem}_files"));
        let named: Vec<(String, &RunMetrics)> =
            labels.iter().cloned().zip(metrics.iter()).collect();
        for key in OVERLAY_KEYS {
            let file = dir.join(format!("overlay_{}", sanitize(key)));
            match overlay_plot(&named, key, &file) {
                Ok(files) => {
                    figure(&mut html, &metric_label(key), &files, &base)?;
                    plots.extend([files.png, files.svg]);
                }
                Err(PlotError::NoData { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        html.push_str("</section>\n");
    }

    for ((l, r), m) in labels.iter().zip(runs).zip(&metrics) {
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
            figure(&mut html, &p.caption, &p.files, &base)?;
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

fn comparison_table(s: &mut String, labels: &[String], metrics: &[RunMetrics]) {
    let cols = [
        keys::VAL_MACRO_ACC,
        keys::NEAR_OOD_COMPOSITIONAL_ACC,
        keys::OOD_ANALOGICAL_ACC,
        keys::GLOBAL_STEP,
    ];
    s.push_str("<table><thead><tr><th>run</th>");
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
    fn relative_paths_climb_and_descend() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("x/run/plots");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::write(a.join("p.png"), b"").unwrap();
        let b = d.path().join("y");
        std::fs::create_dir_all(&b).unwrap();
        assert_eq!(
            relative(&a.join("p.png"), &b).unwrap(),
            "../x/run/plots/p.png"
        );
        assert_eq!(
            relative(&a.join("p.png"), &d.path().join("x/run")).unwrap(),
            "plots/p.png"
        );
    }

    #[test]
    fn url_paths_encode_specials_and_cells_format() {
        assert_eq!(url_path("../a b/#1.png"), "../a%20b/%231.png");
        assert_eq!(fmt_cell(Some(120.0)), "120");
        assert_eq!(fmt_cell(Some(0.123456)), "0.1235");
        assert_eq!(fmt_cell(None), "–");
    }
}
