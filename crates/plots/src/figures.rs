//! The plots: accuracy per fact type (paper Fig. 1B), Dirichlet energy against OOD analogical
//! accuracy (Fig. 6a), the geometry metrics, the embedding PCA with functor arrows (Fig. 7), run
//! overlays, and sweep panels (mean over seeds with a band, Figs. 2-4).

use std::collections::BTreeSet;
use std::path::Path;

use crate::chart::{
    Axis, Figure, LegendEntry, LegendPos, Mark, PALETTE, Panel, Scale, Shape, Swatch,
};
use crate::error::{PlotError, Result};
use crate::render::{PlotFiles, write_figure};
use run_config::keys::{self, TypeMetric, geom};

use crate::series::{PcaSnapshot, RunMetrics, Series};

const STEP_LABEL: &str = "optimiser step (log scale)";

/// Colour, dash and readable name of a fact type; unknown types get the remaining palette colours.
fn type_style(t: &str, unknown_index: usize) -> (String, bool, String) {
    let (c, dashed, name) = match t {
        "id_atomic" => ("#1f77b4", false, "ID atomic"),
        "ood_atomic" => ("#1f77b4", true, "OOD atomic"),
        "id_compositional" => ("#2ca02c", false, "ID compositional"),
        "near_ood_compositional" => ("#2ca02c", true, "near-OOD compositional"),
        "far_ood_compositional" => ("#17becf", true, "far-OOD compositional"),
        "id_analogical" => ("#d62728", false, "ID analogical"),
        "ood_analogical" => ("#d62728", true, "OOD analogical"),
        other => {
            let extra = ["#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#ff7f0e"];
            return (
                extra[unknown_index % extra.len()].to_string(),
                false,
                other.replace('_', " "),
            );
        }
    };
    (c.to_string(), dashed, name.to_string())
}

fn points(s: Option<&Series>) -> Vec<(f64, f64)> {
    s.map(|s| s.points.iter().map(|(x, y)| (*x as f64, *y)).collect())
        .unwrap_or_default()
}

fn line(label: &str, color: &str, pts: Vec<(f64, f64)>, dashed: bool) -> Mark {
    Mark::Line {
        label: Some(label.to_string()),
        color: color.to_string(),
        points: pts,
        dashed,
        right_axis: false,
    }
}

fn no_data(what: &str) -> PlotError {
    PlotError::NoData {
        what: what.to_string(),
    }
}

/// Accuracy of every fact type and of the training batches against the step on a log axis
/// (paper Fig. 1B), written to `<stem>.png` and `<stem>.svg`.
///
/// # Errors
/// [`PlotError::NoData`] when the run has no accuracy series; I/O and render errors.
pub fn accuracy_plot(m: &RunMetrics, title: &str, stem: &Path) -> Result<PlotFiles> {
    let mut p = Panel::new(
        "",
        Axis::new(STEP_LABEL, Scale::Log),
        Axis::new("accuracy", Scale::Linear).range(-0.02, 1.02),
    );
    p.legend = LegendPos::Right;
    p.marks.push(line(
        "train (batch)",
        "#222222",
        points(m.get(keys::TRAIN_ACC_LAST)),
        false,
    ));
    for (i, t) in m.fact_types().iter().enumerate() {
        let (c, dashed, name) = type_style(t, i);
        p.marks.push(line(
            &name,
            &c,
            points(m.get(&keys::per_type_name(TypeMetric::Acc, t))),
            dashed,
        ));
    }
    p.marks
        .retain(|mk| matches!(mk, Mark::Line { points, .. } if !points.is_empty()));
    if !p.has_data() {
        return Err(no_data("accuracy (no train/ACC_last nor val_ACC/* values)"));
    }
    let mut fig = Figure::new(Some(title.to_string()), 1, 980.0, 520.0);
    fig.panels.push(p);
    write_figure(&fig, stem)
}

/// Cross-entropy of every fact type and of the training batches (log-log), the loss view of
/// [`accuracy_plot`].
///
/// # Errors
/// [`PlotError::NoData`] when the run has no CE series; I/O and render errors.
pub fn loss_plot(m: &RunMetrics, title: &str, stem: &Path) -> Result<PlotFiles> {
    let mut p = Panel::new(
        "",
        Axis::new(STEP_LABEL, Scale::Log),
        Axis::new("cross-entropy (log scale)", Scale::Log),
    );
    p.legend = LegendPos::Right;
    p.marks.push(line(
        "train (batch)",
        "#222222",
        points(m.get(keys::TRAIN_CE_LAST)),
        false,
    ));
    for (i, t) in m.fact_types().iter().enumerate() {
        let (c, dashed, name) = type_style(t, i);
        p.marks.push(line(
            &name,
            &c,
            points(m.get(&keys::per_type_name(TypeMetric::Ce, t))),
            dashed,
        ));
    }
    p.marks.retain(|mk| {
        matches!(mk, Mark::Line { points, .. } if points.iter().any(|(x, y)| *x > 0.0 && *y > 0.0))
    });
    if !p.has_data() {
        return Err(no_data(
            "loss (no positive train/CE_last nor val_CE/* values)",
        ));
    }
    let mut fig = Figure::new(Some(title.to_string()), 1, 980.0, 520.0);
    fig.panels.push(p);
    write_figure(&fig, stem)
}

/// Dirichlet energy of the functor graph (left axis; input embeddings and head rows) with the
/// OOD analogical accuracy (right axis) against the step (paper Fig. 6a).
///
/// # Errors
/// [`PlotError::NoData`] when the run has no `geom/dirichlet_energy*` values; I/O and render errors.
pub fn energy_plot(m: &RunMetrics, title: &str, stem: &Path) -> Result<PlotFiles> {
    let energy_c = "#1f77b4";
    let acc_c = "#d62728";
    let mut p = Panel::new(
        "",
        Axis::new(STEP_LABEL, Scale::Log),
        Axis::new("Dirichlet energy", Scale::Linear).color(energy_c),
    );
    p.legend = LegendPos::Below;
    let e = points(m.get(geom::DIRICHLET_ENERGY));
    let eh = points(m.get(geom::DIRICHLET_ENERGY_HEAD));
    if e.is_empty() && eh.is_empty() {
        return Err(no_data("energy (no geom/dirichlet_energy values)"));
    }
    if !e.is_empty() {
        p.marks
            .push(line("energy (input embeddings)", energy_c, e, false));
    }
    if !eh.is_empty() {
        p.marks.push(line("energy (head rows)", energy_c, eh, true));
    }
    p.y2 = Some(
        Axis::new("OOD analogical accuracy", Scale::Linear)
            .range(-0.02, 1.02)
            .color(acc_c),
    );
    p.marks.push(Mark::Line {
        label: Some("OOD analogical accuracy".to_string()),
        color: acc_c.to_string(),
        points: points(m.get(keys::OOD_ANALOGICAL_ACC)),
        dashed: false,
        right_axis: true,
    });
    let mut fig = Figure::new(Some(title.to_string()), 1, 900.0, 540.0);
    fig.panels.push(p);
    write_figure(&fig, stem)
}

/// Geometry panels: (title, y label, [(key, legend label, dashed)]).
type GeomPanel = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str, bool)],
);

const GEOMETRY: [GeomPanel; 9] = [
    (
        "Dirichlet energy",
        "energy",
        &[
            (geom::DIRICHLET_ENERGY, "input embeddings", false),
            (geom::DIRICHLET_ENERGY_HEAD, "head rows", true),
        ],
    ),
    (
        "Translation consistency",
        "1 / (1 + var t)",
        &[(geom::TRANSLATION_CONSISTENCY, "", false)],
    ),
    (
        "Parallelogram score",
        "mean cos",
        &[(geom::PARALLELOGRAM, "", false)],
    ),
    (
        "Analogy-addition score",
        "mean cos",
        &[(geom::ANALOGY_ADDITION, "", false)],
    ),
    ("Isometry", "Pearson r", &[(geom::ISOMETRY, "", false)]),
    (
        "Cluster separation",
        "distance / spread",
        &[(geom::CLUSTER_SEPARATION, "", false)],
    ),
    (
        "Attention <f> → source",
        "attention weight",
        &[
            (geom::ATTN_PROGRESS_ID, "ID analogical", false),
            (geom::ATTN_PROGRESS_OOD, "OOD analogical", true),
        ],
    ),
    (
        "Parallelism",
        "cos(U[eₜ] − E[eₛ], E[<f>])",
        &[
            (geom::PARALLELISM_ID, "ID analogical", false),
            (geom::PARALLELISM_OOD, "OOD analogical", true),
        ],
    ),
    (
        "Analogy read-out among E2",
        "score",
        &[
            (geom::HIT1_OOD, "hit@1, OOD analogical", false),
            (geom::MRR_OOD, "MRR, OOD analogical", true),
            (geom::HIT1_ID, "hit@1, ID analogical", false),
            (geom::MRR_ID, "MRR, ID analogical", true),
        ],
    ),
];

/// Small multiples of every `geom/*` metric against the step (log axis): the known ones in a
/// fixed order, then any other `geom/` key the run has.
///
/// # Errors
/// [`PlotError::NoData`] when the run has no `geom/*` value; I/O and render errors.
pub fn geometry_plot(m: &RunMetrics, title: &str, stem: &Path) -> Result<PlotFiles> {
    let mut panels = Vec::new();
    let mut known = BTreeSet::new();
    let colors = ["#1f77b4", "#d62728"];
    for (ptitle, ylabel, keys) in GEOMETRY {
        let mut p = Panel::new(
            ptitle,
            Axis::new("step (log scale)", Scale::Log),
            Axis::new(ylabel, Scale::Linear),
        );
        for (i, (key, label, dashed)) in keys.iter().enumerate() {
            known.insert(*key);
            let pts = points(m.get(key));
            if pts.is_empty() {
                continue;
            }
            let label = if keys.len() > 1 {
                Some(label.to_string())
            } else {
                None
            };
            p.marks.push(Mark::Line {
                label,
                color: colors[i % colors.len()].to_string(),
                points: pts,
                dashed: *dashed,
                right_axis: false,
            });
        }
        if p.has_data() {
            if p.marks.len() > 1 {
                p.legend = LegendPos::Below;
            } else if let Some(Mark::Line { label, .. }) = p.marks.first_mut() {
                // A lone curve of a two-curve panel still says which one it is.
                if let Some(l) = label.take() {
                    p.title = format!("{ptitle} ({l})");
                }
            }
            panels.push(p);
        }
    }
    for key in m.keys() {
        if key.starts_with(geom::PREFIX) && !known.contains(key) {
            let mut p = Panel::new(
                key.trim_start_matches(geom::PREFIX),
                Axis::new("step (log scale)", Scale::Log),
                Axis::new("value", Scale::Linear),
            );
            p.marks.push(Mark::Line {
                label: None,
                color: PALETTE[2].to_string(),
                points: points(m.get(key)),
                dashed: false,
                right_axis: false,
            });
            panels.push(p);
        }
    }
    if panels.is_empty() {
        return Err(no_data("geometry (no geom/* values)"));
    }
    // Keep every panel the same height, so a row with a legend below gets the room it needs.
    let any_below = panels.iter().any(|p| p.legend == LegendPos::Below);
    let cols = 3.min(panels.len());
    let mut fig = Figure::new(
        Some(title.to_string()),
        cols,
        430.0,
        if any_below { 340.0 } else { 310.0 },
    );
    fig.panels = panels;
    write_figure(&fig, stem)
}

/// At most `n` snapshots, evenly spread, always keeping the first and the last.
fn pick_snapshots(snaps: &[PcaSnapshot], n: usize) -> Vec<&PcaSnapshot> {
    // One per step (files of earlier versions repeat the last step).
    let mut unique: Vec<&PcaSnapshot> = Vec::with_capacity(snaps.len());
    for s in snaps {
        if unique.last().is_none_or(|u| u.global_step != s.global_step) {
            unique.push(s);
        }
    }
    let snaps = unique;
    if snaps.len() <= n {
        return snaps;
    }
    let mut idx: Vec<usize> = (0..n)
        .map(|i| ((i as f64) * (snaps.len() - 1) as f64 / (n - 1) as f64).round() as usize)
        .collect();
    idx.dedup();
    idx.into_iter()
        .filter_map(|i| snaps.get(i).copied())
        .collect()
}

/// The PCA of entity embeddings with functor pairs drawn as arrows (paper Fig. 7), one panel per
/// snapshot (at most six, spread over training); E1, E2, functor and other tokens coloured, arrows
/// of held-out (OOD) pairs dashed in a second colour.
///
/// # Errors
/// [`PlotError::NoData`] when no snapshot has a point; I/O and render errors.
pub fn pca_plot(snapshots: &[PcaSnapshot], title: &str, stem: &Path) -> Result<PlotFiles> {
    let groups: [(&str, &str, &str, Shape); 4] = [
        ("E1", "E1 entities", "#1f77b4", Shape::Circle),
        ("E2", "E2 entities", "#ff7f0e", Shape::Square),
        ("functor", "functor <f>", "#2ca02c", Shape::Diamond),
        ("other", "other tokens", "#8c8c8c", Shape::Triangle),
    ];
    let (id_c, ood_c) = ("#555555", "#d62728");
    let mut panels = Vec::new();
    for snap in pick_snapshots(snapshots, 6) {
        if snap.points.is_empty() {
            continue;
        }
        let mut p = Panel::new(
            pca_title(snap),
            Axis::new("PC 1", Scale::Linear),
            Axis::new("PC 2", Scale::Linear),
        );
        p.equal_aspect = true;
        let at = |tok: &str| {
            snap.points
                .iter()
                .find(|q| q.token == tok)
                .map(|q| (q.x, q.y))
        };
        for a in &snap.arrows {
            if let (Some(from), Some(to)) = (at(&a.from), at(&a.to)) {
                p.marks.push(Mark::Arrow {
                    from,
                    to,
                    color: if a.ood { ood_c } else { id_c }.to_string(),
                    dashed: a.ood,
                });
            }
        }
        for (g, _, c, shape) in groups {
            let pts: Vec<(f64, f64)> = snap
                .points
                .iter()
                .filter(|q| {
                    let known = ["E1", "E2", "functor"].contains(&q.group.as_str());
                    q.group == g || (g == "other" && !known)
                })
                .map(|q| (q.x, q.y))
                .collect();
            if !pts.is_empty() {
                p.marks.push(Mark::Scatter {
                    label: None,
                    color: c.to_string(),
                    shape,
                    points: pts,
                });
            }
        }
        // Token names help at the paper's sizes (|E| = 10-40) and only clutter beyond.
        if snap.points.len() <= 44 {
            for q in &snap.points {
                p.marks.push(Mark::Label {
                    at: (q.x, q.y),
                    text: q
                        .token
                        .trim_start_matches('<')
                        .trim_end_matches('>')
                        .to_string(),
                });
            }
        }
        panels.push(p);
    }
    if panels.is_empty() {
        return Err(no_data("PCA (no snapshot with points)"));
    }
    let cols = 3.min(panels.len());
    let mut fig = Figure::new(Some(title.to_string()), cols, 420.0, 420.0);
    fig.panels = panels;
    let drawn = |g: &str| {
        let known = ["E1", "E2", "functor"];
        snapshots
            .iter()
            .flat_map(|s| &s.points)
            .any(|q| q.group == g || (g == "other" && !known.contains(&q.group.as_str())))
    };
    let mut legend: Vec<LegendEntry> = groups
        .iter()
        .filter(|(g, ..)| drawn(g))
        .map(|(_, label, c, shape)| LegendEntry {
            label: label.to_string(),
            color: c.to_string(),
            swatch: Swatch::Point(*shape),
        })
        .collect();
    legend.push(LegendEntry {
        label: "functor pair (ID)".to_string(),
        color: id_c.to_string(),
        swatch: Swatch::Arrow { dashed: false },
    });
    legend.push(LegendEntry {
        label: "functor pair (OOD)".to_string(),
        color: ood_c.to_string(),
        swatch: Swatch::Arrow { dashed: true },
    });
    fig.shared_legend = legend;
    write_figure(&fig, stem)
}

/// A PCA panel's title: the step it was taken at, and the requested step when that differs (a
/// snapshot is taken at the end of the epoch that passes a requested step).
fn pca_title(snap: &PcaSnapshot) -> String {
    let step = snap.global_step;
    match snap.requested_steps.as_deref() {
        None => format!("step {step}"),
        Some([]) => format!("step {step} (end of training)"),
        Some(req) if req.iter().all(|&r| r == step) => format!("step {step}"),
        Some(req) => {
            let req: Vec<String> = req.iter().map(u64::to_string).collect();
            format!("step {step} (epoch end after {})", req.join(", "))
        }
    }
}

/// A readable axis label for a metric key.
pub fn metric_label(key: &str) -> String {
    if let Some((metric, t)) = keys::parse_per_type(key)
        && !t.contains('/')
    {
        let (_, _, name) = type_style(t, 0);
        let kind = match metric {
            TypeMetric::Acc => "accuracy",
            TypeMetric::Ce => "cross-entropy",
            TypeMetric::Ppl => "perplexity",
            TypeMetric::Prob => "target probability",
            TypeMetric::N => "count",
        };
        return format!("{name} {kind}");
    }
    let label = match key {
        keys::TRAIN_ACC_LAST => "train accuracy (batch)",
        keys::TRAIN_CE_LAST => "train cross-entropy (batch)",
        keys::TRAIN_PROB_LAST => "train target probability (batch)",
        keys::TRAIN_CE_EPOCH => "train cross-entropy (epoch)",
        keys::VAL_MACRO_ACC => "macro accuracy",
        keys::VAL_MACRO_CE => "macro cross-entropy",
        keys::LR => "learning rate",
        keys::GLOBAL_STEP => "step",
        keys::EPOCH => "epoch",
        geom::DIRICHLET_ENERGY => "Dirichlet energy (input embeddings)",
        geom::DIRICHLET_ENERGY_HEAD => "Dirichlet energy (head rows)",
        geom::TRANSLATION_CONSISTENCY => "translation consistency",
        geom::PARALLELOGRAM => "parallelogram score",
        geom::ANALOGY_ADDITION => "analogy-addition score",
        geom::ISOMETRY => "isometry",
        geom::CLUSTER_SEPARATION => "cluster separation",
        geom::PARALLELISM_ID => "parallelism (ID analogical)",
        geom::PARALLELISM_OOD => "parallelism (OOD analogical)",
        geom::ATTN_PROGRESS_ID => "attention <f> → source (ID analogical)",
        geom::ATTN_PROGRESS_OOD => "attention <f> → source (OOD analogical)",
        geom::HIT1_ID => "read-out hit@1 (ID analogical)",
        geom::HIT1_OOD => "read-out hit@1 (OOD analogical)",
        geom::MRR_ID => "read-out MRR (ID analogical)",
        geom::MRR_OOD => "read-out MRR (OOD analogical)",
        other => other,
    };
    label.to_string()
}

/// One curve per run of the metric `key` against the step (log axis), for comparisons. Runs
/// without the metric are left out of the plot.
///
/// # Errors
/// [`PlotError::NoData`] when no run has the metric; I/O and render errors.
pub fn overlay_plot(runs: &[(String, &RunMetrics)], key: &str, stem: &Path) -> Result<PlotFiles> {
    let label = metric_label(key);
    let y = if key.contains("ACC") || key.contains("PROB") {
        Axis::new(&label, Scale::Linear).range(-0.02, 1.02)
    } else {
        Axis::new(&label, Scale::Linear)
    };
    let mut p = Panel::new(
        format!("{label} per run"),
        Axis::new(STEP_LABEL, Scale::Log),
        y,
    );
    p.legend = LegendPos::Right;
    for (i, (name, m)) in runs.iter().enumerate() {
        let pts = points(m.get(key));
        if !pts.is_empty() {
            p.marks.push(line(
                name,
                PALETTE[i % PALETTE.len()],
                pts,
                i >= PALETTE.len(),
            ));
        }
    }
    if !p.has_data() {
        return Err(no_data(&format!("overlay of {key} (no run has it)")));
    }
    let mut fig = Figure::new(None, 1, 980.0, 500.0);
    fig.panels.push(p);
    write_figure(&fig, stem)
}

/// The runs (seeds) of one swept value.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepGroup {
    /// Legend text, e.g. `|E| = 20`.
    pub label: String,
    /// One series of the plotted metric per seed.
    pub runs: Vec<Series>,
}

/// A reported onset drawn as a labelled vertical dashed line (for example the paper's).
#[derive(Debug, Clone, PartialEq)]
pub struct OnsetMarker {
    /// The step of the onset.
    pub step: f64,
    /// Text along the line, e.g. `paper |E|=20`.
    pub label: String,
    /// Index of the group whose colour the line takes; grey when `None`.
    pub group: Option<usize>,
}

/// What the band around the mean over seeds shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BandKind {
    /// From the smallest to the largest seed.
    #[default]
    MinMax,
    /// Mean ± one (population) standard deviation.
    Std,
}

/// One panel of a sweep figure: one curve (mean over seeds) and band per group.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepPanel {
    /// Panel title, e.g. `OOD analogical accuracy`.
    pub title: String,
    /// Y-axis label.
    pub y_label: String,
    /// The swept values; colours follow the order.
    pub groups: Vec<SweepGroup>,
    /// Onsets to mark.
    pub markers: Vec<OnsetMarker>,
    /// What the band shows.
    pub band: BandKind,
    /// Fixed y range (e.g. `(0, 1)` for accuracies), otherwise fitted.
    pub y_range: Option<(f64, f64)>,
}

/// Mean and band of several seeds' series, as `(step, mean, band_lo, band_hi)` rows.
///
/// Seeds are aligned on the union of their steps; a seed contributes at a step inside its own
/// step range, linearly interpolated between its neighbouring points, so seeds logged on slightly
/// different steps still average. Steps covered by no seed are absent.
pub fn aggregate(runs: &[Series], band: BandKind) -> Vec<(u64, f64, f64, f64)> {
    let mut steps = BTreeSet::new();
    let sorted: Vec<Vec<(u64, f64)>> = runs
        .iter()
        .map(|s| {
            let mut p = s.points.clone();
            p.sort_by_key(|(x, _)| *x);
            p
        })
        .collect();
    for s in &sorted {
        steps.extend(s.iter().map(|(x, _)| *x));
    }
    let value_at = |s: &[(u64, f64)], x: u64| -> Option<f64> {
        let i = s.partition_point(|(sx, _)| *sx < x);
        let (x1, y1) = *s.get(i)?;
        if x1 == x {
            // Several rows at one step (e.g. batch and epoch rows): the last one wins.
            let j = s.partition_point(|(sx, _)| *sx <= x);
            return s.get(j.checked_sub(1)?).map(|(_, y)| *y);
        }
        let (x0, y0) = *s.get(i.checked_sub(1)?)?;
        let f = (x - x0) as f64 / (x1 - x0) as f64;
        Some(y0 + f * (y1 - y0))
    };
    let mut out = Vec::new();
    for x in steps {
        let vals: Vec<f64> = sorted.iter().filter_map(|s| value_at(s, x)).collect();
        if vals.is_empty() {
            continue;
        }
        let n = vals.len() as f64;
        let mean = vals.iter().sum::<f64>() / n;
        let (lo, hi) = match band {
            BandKind::MinMax => vals
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                    (a.min(*v), b.max(*v))
                }),
            BandKind::Std => {
                let sd = (vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
                (mean - sd, mean + sd)
            }
        };
        out.push((x, mean, lo, hi));
    }
    out
}

/// A sweep figure (paper Figs. 2-4): one panel per entry of `panels`, one curve per group (the
/// mean over its seeds) with a band, log step axis, onset markers, and a legend shared by the
/// panels.
///
/// # Errors
/// [`PlotError::NoData`] when no panel has a point; I/O and render errors.
pub fn sweep_plot(title: &str, panels: &[SweepPanel], stem: &Path) -> Result<PlotFiles> {
    let mut out = Vec::new();
    let mut legend: Vec<LegendEntry> = Vec::new();
    let same_band = panels.windows(2).all(|w| w[0].band == w[1].band);
    let band_name = |b: BandKind| match b {
        BandKind::MinMax => "mean, band min–max over seeds",
        BandKind::Std => "mean ± std over seeds",
    };
    for sp in panels {
        let y_label = if same_band {
            sp.y_label.clone()
        } else {
            format!("{} ({})", sp.y_label, band_name(sp.band))
        };
        let mut y = Axis::new(y_label, Scale::Linear);
        y.range = sp.y_range;
        let mut p = Panel::new(&sp.title, Axis::new(STEP_LABEL, Scale::Log), y);
        for (i, g) in sp.groups.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()].to_string();
            let agg = aggregate(&g.runs, sp.band);
            if agg.is_empty() {
                continue;
            }
            if g.runs.len() > 1 {
                p.marks.push(Mark::Band {
                    color: color.clone(),
                    points: agg
                        .iter()
                        .map(|(x, _, lo, hi)| (*x as f64, *lo, *hi))
                        .collect(),
                });
            }
            p.marks.push(Mark::Line {
                label: None,
                color: color.clone(),
                points: agg.iter().map(|(x, m, _, _)| (*x as f64, *m)).collect(),
                dashed: false,
                right_axis: false,
            });
            let label = format!("{} (n={})", g.label, g.runs.len());
            if !legend.iter().any(|e| e.label == label) {
                legend.push(LegendEntry {
                    label,
                    color,
                    swatch: Swatch::Line { dashed: false },
                });
            }
        }
        for mk in &sp.markers {
            let color = mk
                .group
                .map(|g| PALETTE[g % PALETTE.len()])
                .unwrap_or("#666666");
            p.marks.push(Mark::VLine {
                x: mk.step,
                color: color.to_string(),
                label: Some(mk.label.clone()),
            });
        }
        if p.has_data() {
            out.push(p);
        }
    }
    if out.is_empty() {
        return Err(no_data(&format!("sweep {title} (no group has a point)")));
    }
    if panels.iter().any(|p| !p.markers.is_empty()) {
        legend.push(LegendEntry {
            label: "reported onset".to_string(),
            color: "#666666".to_string(),
            swatch: Swatch::VLine,
        });
    }
    let fig_title = match panels.first() {
        Some(p) if same_band => format!("{title} ({})", band_name(p.band)),
        _ => title.to_string(),
    };
    let cols = 3.min(out.len());
    let mut fig = Figure::new(Some(fig_title), cols, 460.0, 380.0);
    fig.panels = out;
    fig.shared_legend = legend;
    write_figure(&fig, stem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregate_min_max_and_std_by_hand() {
        let a = Series::new(vec![(10, 0.0), (20, 1.0)]);
        let b = Series::new(vec![(10, 0.5), (15, 0.5), (20, 0.0)]);
        let rows = aggregate(&[a.clone(), b.clone()], BandKind::MinMax);
        // At 15, seed a is interpolated to 0.5.
        assert_eq!(
            rows,
            vec![
                (10, 0.25, 0.0, 0.5),
                (15, 0.5, 0.5, 0.5),
                (20, 0.5, 0.0, 1.0)
            ]
        );
        let rows = aggregate(&[a, b], BandKind::Std);
        assert_eq!(rows[0], (10, 0.25, 0.0, 0.5));
        assert_eq!(rows[1], (15, 0.5, 0.5, 0.5));
    }

    #[test]
    fn aggregate_ignores_seeds_outside_their_range() {
        let a = Series::new(vec![(1, 1.0), (2, 3.0)]);
        let b = Series::new(vec![(2, 5.0), (3, 7.0)]);
        let rows = aggregate(&[a, b], BandKind::MinMax);
        assert_eq!(
            rows,
            vec![(1, 1.0, 1.0, 1.0), (2, 4.0, 3.0, 5.0), (3, 7.0, 7.0, 7.0)]
        );
    }

    #[test]
    fn picks_first_and_last_snapshots() {
        let snaps: Vec<PcaSnapshot> = (0..10).map(|i| snapshot(i, None)).collect();
        let steps: Vec<u64> = pick_snapshots(&snaps, 4)
            .iter()
            .map(|s| s.global_step)
            .collect();
        assert_eq!(steps, vec![0, 3, 6, 9]);
        // A repeated last step counts once.
        let snaps = [
            snapshot(5, Some(vec![5])),
            snapshot(9, Some(vec![8])),
            snapshot(9, Some(vec![])),
        ];
        let picked = pick_snapshots(&snaps, 6);
        assert_eq!(picked.len(), 2);
        assert_eq!(picked[1].requested_steps, Some(vec![8]));
    }

    fn snapshot(step: u64, requested: Option<Vec<u64>>) -> PcaSnapshot {
        PcaSnapshot {
            global_step: step,
            requested_steps: requested,
            points: Vec::new(),
            arrows: Vec::new(),
        }
    }

    #[test]
    fn pca_titles_say_when_the_step_is_not_the_requested_one() {
        assert_eq!(pca_title(&snapshot(312, None)), "step 312");
        assert_eq!(pca_title(&snapshot(300, Some(vec![300]))), "step 300");
        assert_eq!(
            pca_title(&snapshot(312, Some(vec![300]))),
            "step 312 (epoch end after 300)"
        );
        assert_eq!(
            pca_title(&snapshot(24, Some(vec![1, 20]))),
            "step 24 (epoch end after 1, 20)"
        );
        assert_eq!(
            pca_title(&snapshot(2400, Some(vec![]))),
            "step 2400 (end of training)"
        );
    }
}
