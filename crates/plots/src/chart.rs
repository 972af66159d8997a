//! A small SVG chart engine: panels with linear or log axes, lines, bands, markers, arrows and
//! legends kept outside the plotting area so they never hide data.
//!
//! Text is written as SVG `<text>` in DejaVu Sans; the PNG twin is rasterised by [`crate::render`]
//! with the same font loaded from the `dejavu` crate, so no system font is involved. Text widths
//! for layout are estimated from DejaVu Sans' advance widths (slightly generous on purpose).

use std::fmt::Write as _;

/// Scale of an axis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Scale {
    Linear,
    Log,
}

/// One axis: label, scale and an optional fixed range (otherwise fitted to the data with a margin).
#[derive(Debug, Clone)]
pub(crate) struct Axis {
    pub label: String,
    pub scale: Scale,
    pub range: Option<(f64, f64)>,
    /// Colours the label and tick labels (twin axes say which curve they belong to).
    pub color: Option<String>,
}

impl Axis {
    pub fn new(label: impl Into<String>, scale: Scale) -> Self {
        Self {
            label: label.into(),
            scale,
            range: None,
            color: None,
        }
    }

    pub fn range(mut self, lo: f64, hi: f64) -> Self {
        self.range = Some((lo, hi));
        self
    }

    pub fn color(mut self, c: &str) -> Self {
        self.color = Some(c.to_string());
        self
    }
}

/// Marker shapes for scatter points.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Shape {
    Circle,
    Square,
    Diamond,
    Triangle,
}

/// Something drawn inside a panel, in data coordinates.
#[derive(Debug, Clone)]
pub(crate) enum Mark {
    Line {
        label: Option<String>,
        color: String,
        points: Vec<(f64, f64)>,
        dashed: bool,
        right_axis: bool,
    },
    /// A filled band between `lo` and `hi` at each `x`.
    Band {
        color: String,
        points: Vec<(f64, f64, f64)>,
    },
    Scatter {
        label: Option<String>,
        color: String,
        shape: Shape,
        points: Vec<(f64, f64)>,
    },
    Arrow {
        from: (f64, f64),
        to: (f64, f64),
        color: String,
        dashed: bool,
    },
    /// Small text beside a data point (token names in the PCA picture).
    Label { at: (f64, f64), text: String },
    /// A dashed vertical line across the panel with an optional label along it.
    VLine {
        x: f64,
        color: String,
        label: Option<String>,
    },
}

/// What a legend entry shows next to its text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Swatch {
    Line { dashed: bool },
    Point(Shape),
    Arrow { dashed: bool },
    VLine,
}

/// One legend entry.
#[derive(Debug, Clone)]
pub(crate) struct LegendEntry {
    pub label: String,
    pub color: String,
    pub swatch: Swatch,
}

/// Where a panel's legend goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum LegendPos {
    None,
    Right,
    Below,
}

/// One set of axes.
#[derive(Debug, Clone)]
pub(crate) struct Panel {
    pub title: String,
    pub x: Axis,
    pub y: Axis,
    pub y2: Option<Axis>,
    pub marks: Vec<Mark>,
    pub legend: LegendPos,
    /// Extra legend entries (swatches not tied to a labelled mark, e.g. arrow kinds).
    pub extra_legend: Vec<LegendEntry>,
    /// Same data units per pixel on both axes (PCA pictures).
    pub equal_aspect: bool,
}

impl Panel {
    pub fn new(title: impl Into<String>, x: Axis, y: Axis) -> Self {
        Self {
            title: title.into(),
            x,
            y,
            y2: None,
            marks: Vec::new(),
            legend: LegendPos::None,
            extra_legend: Vec::new(),
            equal_aspect: false,
        }
    }

    fn legend_entries(&self) -> Vec<LegendEntry> {
        let mut out = Vec::new();
        for m in &self.marks {
            match m {
                Mark::Line {
                    label: Some(l),
                    color,
                    dashed,
                    ..
                } => out.push(LegendEntry {
                    label: l.clone(),
                    color: color.clone(),
                    swatch: Swatch::Line { dashed: *dashed },
                }),
                Mark::Scatter {
                    label: Some(l),
                    color,
                    shape,
                    ..
                } => out.push(LegendEntry {
                    label: l.clone(),
                    color: color.clone(),
                    swatch: Swatch::Point(*shape),
                }),
                _ => {}
            }
        }
        out.extend(self.extra_legend.iter().cloned());
        out
    }

    /// True when at least one mark has a drawable point.
    pub fn has_data(&self) -> bool {
        self.marks.iter().any(|m| match m {
            Mark::Line { points, .. } | Mark::Scatter { points, .. } => !points.is_empty(),
            Mark::Band { points, .. } => !points.is_empty(),
            Mark::Arrow { .. } => true,
            Mark::Label { .. } | Mark::VLine { .. } => false,
        })
    }
}

/// A grid of panels with an optional title and a legend shared by all panels on the right.
#[derive(Debug, Clone)]
pub(crate) struct Figure {
    pub title: Option<String>,
    pub cols: usize,
    pub panel_w: f64,
    pub panel_h: f64,
    pub panels: Vec<Panel>,
    pub shared_legend: Vec<LegendEntry>,
}

pub(crate) const PALETTE: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

const FONT: &str = "DejaVu Sans";
const TITLE_SIZE: f64 = 15.0;
const FIG_TITLE_SIZE: f64 = 17.0;
const LABEL_SIZE: f64 = 13.0;
const TICK_SIZE: f64 = 11.5;
const LEGEND_SIZE: f64 = 12.0;
const SMALL_SIZE: f64 = 10.0;

/// Places point labels so that none overlaps another: each label tries the four corners around
/// its point (upper right first) and is left out when all four are taken.
#[derive(Debug, Default)]
struct LabelPlacer {
    boxes: Vec<(f64, f64, f64, f64)>,
}

impl LabelPlacer {
    /// The text position and anchor of a label for the point `(px, py)`, or `None` when it
    /// would overlap a label already placed.
    fn place(&mut self, px: f64, py: f64, text: &str) -> Option<(f64, f64, &'static str)> {
        let w = text.chars().count() as f64 * SMALL_SIZE * 0.6;
        let h = SMALL_SIZE;
        let corners = [
            (px + 6.0, py - 5.0, "start"),
            (px + 6.0, py + 5.0 + h, "start"),
            (px - 6.0, py - 5.0, "end"),
            (px - 6.0, py + 5.0 + h, "end"),
        ];
        for (x, y, anchor) in corners {
            let x0 = if anchor == "end" { x - w } else { x };
            let b = (x0, y - h, x0 + w, y + 2.0);
            let free = self
                .boxes
                .iter()
                .all(|o| b.2 <= o.0 || o.2 <= b.0 || b.3 <= o.1 || o.3 <= b.1);
            if free {
                self.boxes.push(b);
                return Some((x, y, anchor));
            }
        }
        None
    }

    /// The top of a label written downwards beside a vertical line at `x`: `top` when free,
    /// else just below the labels in its way; `None` when it would pass `bottom`.
    fn place_vertical(&mut self, x: f64, top: f64, bottom: f64, text: &str) -> Option<f64> {
        let len = text.chars().count() as f64 * SMALL_SIZE * 0.6;
        let (x0, x1) = (x - SMALL_SIZE, x + 2.0);
        let mut y = top;
        loop {
            let b = (x0, y, x1, y + len);
            let blocking = self
                .boxes
                .iter()
                .filter(|o| !(b.2 <= o.0 || o.2 <= b.0 || b.3 <= o.1 || o.3 <= b.1))
                .map(|o| o.3)
                .reduce(f64::max);
            match blocking {
                None if b.3 <= bottom => {
                    self.boxes.push(b);
                    return Some(y);
                }
                None => return None,
                Some(below) => y = below + 4.0,
            }
        }
    }
}
const LINE_W: f64 = 2.0;
const LEGEND_MAX_CHARS: usize = 48;

/// Estimated advance width of `s` in DejaVu Sans at `size` px.
pub(crate) fn text_width(s: &str, size: f64) -> f64 {
    let em: f64 = s
        .chars()
        .map(|c| match c {
            'i' | 'j' | 'l' | '\'' | '|' | '.' | ',' | ':' | ';' | '!' => 0.30,
            'f' | 't' | 'r' | 'I' | ' ' | '(' | ')' | '[' | ']' | '/' | '-' => 0.40,
            'm' | 'w' | 'M' | 'W' | '%' | '@' => 0.92,
            '0'..='9' => 0.64,
            'A'..='Z' | '<' | '>' | '=' | '+' | '×' | '≈' | '±' => 0.74,
            '²' | '³' | '¹' | '⁰'..='⁹' | '⁻' => 0.42,
            _ => 0.62,
        })
        .sum();
    em * size
}

pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let head: String = s.chars().take(max - 1).collect();
        format!("{head}…")
    }
}

/// A tick: position in data units, label (empty for unlabelled minor ticks), major or not.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Tick {
    pub value: f64,
    pub label: String,
    pub major: bool,
}

fn superscript(n: i32) -> String {
    let digits = ['⁰', '¹', '²', '³', '⁴', '⁵', '⁶', '⁷', '⁸', '⁹'];
    let mut s = String::new();
    if n < 0 {
        s.push('⁻');
    }
    for c in n.unsigned_abs().to_string().chars() {
        let d = c.to_digit(10).unwrap_or(0) as usize;
        s.push(digits[d]);
    }
    s
}

/// Plain decimal label for `v` with just enough digits for the tick spacing `step`.
pub(crate) fn fmt_num(v: f64, step: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e5).contains(&a) {
        let e = a.log10().floor() as i32;
        let m = v / 10f64.powi(e);
        return if (m - m.round()).abs() < 1e-9 {
            format!("{}×10{}", m.round(), superscript(e))
        } else {
            format!("{m:.1}×10{}", superscript(e))
        };
    }
    // Fewest decimals that still tell neighbouring ticks apart (0.25 needs two, 0.2 one).
    let decimals = (0..=6)
        .find(|d| {
            let scaled = step.abs() * 10f64.powi(*d);
            (scaled - scaled.round()).abs() < 1e-6 * scaled.max(1.0)
        })
        .unwrap_or(6) as usize;
    let s = format!("{v:.decimals$}");
    match s.strip_prefix('-') {
        Some(rest) if rest.chars().all(|c| c == '0' || c == '.') => rest.to_string(),
        _ => s,
    }
}

/// About five "nice" ticks (1, 2, 2.5, 5 × 10ᵏ) covering `[lo, hi]`.
pub(crate) fn linear_ticks(lo: f64, hi: f64) -> Vec<Tick> {
    let span = hi - lo;
    if span.is_nan() || span <= 0.0 || !span.is_finite() {
        return Vec::new();
    }
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last)
        .map(|k| {
            let v = k as f64 * step;
            Tick {
                value: v,
                label: fmt_num(v, step),
                major: true,
            }
        })
        .collect()
}

/// Ticks of a log axis over `[lo, hi]` (both > 0): decades labelled `10ᵏ`; over short ranges the
/// 2× and 5× ticks are labelled too (as plain numbers), so every plot has at least two labels.
pub(crate) fn log_ticks(lo: f64, hi: f64) -> Vec<Tick> {
    if !(lo > 0.0 && hi > lo && hi.is_finite()) {
        return Vec::new();
    }
    let e0 = lo.log10().floor() as i32;
    let e1 = hi.log10().ceil() as i32;
    let decades = hi.log10() - lo.log10();
    let short = decades < 2.2;
    // Plain numbers only when every labelled decade reads well that way (1 … 1000).
    let plain = decades < 3.0 && e0 >= 0 && e1 <= 3;
    let mut out = Vec::new();
    for e in e0..=e1 {
        let base = 10f64.powi(e);
        for m in 1..10 {
            let v = base * m as f64;
            if v < lo * (1.0 - 1e-9) || v > hi * (1.0 + 1e-9) {
                continue;
            }
            let major = m == 1;
            let label = if short && (m == 1 || m == 2 || m == 5) {
                fmt_num(v, v)
            } else if major {
                if plain {
                    fmt_num(v, v)
                } else {
                    format!("10{}", superscript(e))
                }
            } else {
                String::new()
            };
            out.push(Tick {
                value: v,
                label,
                major,
            });
        }
    }
    out
}

/// Which tick labels of a horizontal axis to show: majors first, then minors that keep a gap
/// to every label already placed, so labels never overlap however narrow the panel.
fn spaced_labels(ticks: &[Tick], pos: impl Fn(f64) -> Option<f64>) -> Vec<bool> {
    let mut placed: Vec<(f64, f64)> = Vec::new();
    let mut show = vec![false; ticks.len()];
    for pass_major in [true, false] {
        for (i, t) in ticks.iter().enumerate() {
            if t.label.is_empty() || t.major != pass_major {
                continue;
            }
            let Some(x) = pos(t.value) else { continue };
            let half = text_width(&t.label, TICK_SIZE) / 2.0 + 4.0;
            if placed.iter().all(|(a, b)| x + half < *a || x - half > *b) {
                placed.push((x - half, x + half));
                show[i] = true;
            }
        }
    }
    show
}

fn ticks_for(axis: &Axis, lo: f64, hi: f64) -> Vec<Tick> {
    match axis.scale {
        Scale::Linear => linear_ticks(lo, hi),
        Scale::Log => log_ticks(lo, hi),
    }
}

/// Fits the axis range to the data (with a 4 % margin), or uses the fixed range.
fn fit_range(axis: &Axis, values: &[f64]) -> (f64, f64) {
    if let Some(r) = axis.range {
        return r;
    }
    let usable: Vec<f64> = values
        .iter()
        .copied()
        .filter(|v| v.is_finite() && (axis.scale == Scale::Linear || *v > 0.0))
        .collect();
    let (mut lo, mut hi) = usable
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(*v), b.max(*v))
        });
    if !lo.is_finite() {
        return match axis.scale {
            Scale::Linear => (0.0, 1.0),
            Scale::Log => (1.0, 10.0),
        };
    }
    match axis.scale {
        Scale::Linear => {
            if hi - lo < 1e-12 {
                let pad = if lo.abs() > 1e-12 {
                    lo.abs() * 0.1
                } else {
                    0.5
                };
                lo -= pad;
                hi += pad;
            }
            let pad = (hi - lo) * 0.04;
            (lo - pad, hi + pad)
        }
        Scale::Log => {
            let (mut l, mut h) = (lo.log10(), hi.log10());
            if h - l < 1e-9 {
                l -= 0.5;
                h += 0.5;
            }
            let pad = (h - l) * 0.03;
            (10f64.powf(l - pad), 10f64.powf(h + pad))
        }
    }
}

/// Maps data to pixels along one axis.
#[derive(Debug, Clone, Copy)]
struct Map {
    scale: Scale,
    lo: f64,
    hi: f64,
    p0: f64,
    p1: f64,
}

impl Map {
    fn t(&self, v: f64) -> Option<f64> {
        let (a, b, x) = match self.scale {
            Scale::Linear => (self.lo, self.hi, v),
            Scale::Log => {
                if v <= 0.0 {
                    return None;
                }
                (self.lo.log10(), self.hi.log10(), v.log10())
            }
        };
        if !x.is_finite() {
            return None;
        }
        Some(self.p0 + (x - a) / (b - a) * (self.p1 - self.p0))
    }
}

fn legend_size(entries: &[LegendEntry]) -> (f64, f64) {
    let w = entries
        .iter()
        .map(|e| text_width(&truncate(&e.label, LEGEND_MAX_CHARS), LEGEND_SIZE))
        .fold(0.0, f64::max);
    (w + 40.0, entries.len() as f64 * 19.0 + 8.0)
}

fn draw_swatch(s: &mut String, e: &LegendEntry, x: f64, y: f64) {
    let c = &e.color;
    match &e.swatch {
        Swatch::Line { dashed } => {
            let dash = if *dashed {
                " stroke-dasharray=\"6 3\""
            } else {
                ""
            };
            let _ = write!(
                s,
                r#"<line x1="{x:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{c}" stroke-width="{LINE_W}"{dash}/>"#,
                x + 26.0
            );
        }
        Swatch::Point(shape) => draw_shape(s, *shape, x + 13.0, y, 4.5, c),
        Swatch::Arrow { dashed } => {
            let dash = if *dashed {
                " stroke-dasharray=\"5 3\""
            } else {
                ""
            };
            let _ = write!(
                s,
                r#"<line x1="{x:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{c}" stroke-width="1.5"{dash}/>"#,
                x + 20.0
            );
            arrow_head(s, (x, y), (x + 26.0, y), c);
        }
        Swatch::VLine => {
            let _ = write!(
                s,
                r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{c}" stroke-width="1.5" stroke-dasharray="4 3"/>"#,
                x + 13.0,
                y - 7.0,
                x + 13.0,
                y + 7.0
            );
        }
    }
}

fn draw_legend(s: &mut String, entries: &[LegendEntry], x: f64, y: f64) {
    for (i, e) in entries.iter().enumerate() {
        let yy = y + 12.0 + i as f64 * 19.0;
        draw_swatch(s, e, x + 4.0, yy);
        text(
            s,
            x + 36.0,
            yy,
            &truncate(&e.label, LEGEND_MAX_CHARS),
            LEGEND_SIZE,
            "start",
            "middle",
            None,
        );
    }
}

/// Legend laid out in rows under a panel; returns its height for `width`.
fn legend_rows(entries: &[LegendEntry], width: f64) -> Vec<Vec<(usize, f64)>> {
    let mut rows: Vec<Vec<(usize, f64)>> = vec![Vec::new()];
    let mut x = 0.0;
    for (i, e) in entries.iter().enumerate() {
        let w = text_width(&truncate(&e.label, LEGEND_MAX_CHARS), LEGEND_SIZE) + 48.0;
        if x + w > width && x > 0.0 {
            rows.push(Vec::new());
            x = 0.0;
        }
        if let Some(r) = rows.last_mut() {
            r.push((i, x));
        }
        x += w;
    }
    rows
}

#[allow(clippy::too_many_arguments)]
fn text(
    s: &mut String,
    x: f64,
    y: f64,
    t: &str,
    size: f64,
    anchor: &str,
    baseline: &str,
    rotate: Option<f64>,
) {
    text_styled(s, x, y, t, size, anchor, baseline, rotate, None, false);
}

#[allow(clippy::too_many_arguments)]
fn text_styled(
    s: &mut String,
    x: f64,
    y: f64,
    t: &str,
    size: f64,
    anchor: &str,
    baseline: &str,
    rotate: Option<f64>,
    color: Option<&str>,
    bold: bool,
) {
    // resvg and browsers agree on `dy` offsets more reliably than on dominant-baseline, so the
    // vertical alignment is expressed as a shift in em.
    let dy = match baseline {
        "middle" => "0.35em",
        "hanging" => "0.8em",
        _ => "0",
    };
    let rot = rotate
        .map(|a| format!(r#" transform="rotate({a} {x:.1} {y:.1})""#))
        .unwrap_or_default();
    let fill = color.unwrap_or("#222");
    let weight = if bold { r#" font-weight="bold""# } else { "" };
    let _ = write!(
        s,
        r#"<text x="{x:.1}" y="{y:.1}" dy="{dy}" font-size="{size}" text-anchor="{anchor}" fill="{fill}"{weight}{rot}>{}</text>"#,
        esc(t)
    );
}

fn draw_shape(s: &mut String, shape: Shape, x: f64, y: f64, r: f64, c: &str) {
    let stroke = r##" stroke="#ffffff" stroke-width="0.8""##;
    match shape {
        Shape::Circle => {
            let _ = write!(
                s,
                r#"<circle cx="{x:.1}" cy="{y:.1}" r="{r}" fill="{c}"{stroke}/>"#
            );
        }
        Shape::Square => {
            let _ = write!(
                s,
                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{c}"{stroke}/>"#,
                x - r * 0.9,
                y - r * 0.9,
                1.8 * r,
                1.8 * r
            );
        }
        Shape::Diamond => {
            let r = r * 1.25;
            let _ = write!(
                s,
                r#"<polygon points="{:.1},{:.1} {:.1},{:.1} {:.1},{:.1} {:.1},{:.1}" fill="{c}"{stroke}/>"#,
                x,
                y - r,
                x + r,
                y,
                x,
                y + r,
                x - r,
                y
            );
        }
        Shape::Triangle => {
            let r = r * 1.25;
            let _ = write!(
                s,
                r#"<polygon points="{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}" fill="{c}"{stroke}/>"#,
                x,
                y - r,
                x + r * 0.87,
                y + r * 0.5,
                x - r * 0.87,
                y + r * 0.5
            );
        }
    }
}

fn arrow_head(s: &mut String, from: (f64, f64), to: (f64, f64), c: &str) {
    let (dx, dy) = (to.0 - from.0, to.1 - from.1);
    let len = (dx * dx + dy * dy).sqrt();
    if len < 1e-6 {
        return;
    }
    let (ux, uy) = (dx / len, dy / len);
    let size = 7.0_f64.min(len * 0.6);
    let (bx, by) = (to.0 - ux * size, to.1 - uy * size);
    let (px, py) = (-uy * size * 0.45, ux * size * 0.45);
    let _ = write!(
        s,
        r#"<polygon points="{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}" fill="{c}"/>"#,
        to.0,
        to.1,
        bx + px,
        by + py,
        bx - px,
        by - py
    );
}

fn polyline(s: &mut String, pts: &[(f64, f64)], c: &str, dashed: bool) {
    if pts.is_empty() {
        return;
    }
    if pts.len() == 1 {
        let _ = write!(
            s,
            r#"<circle cx="{:.2}" cy="{:.2}" r="2.5" fill="{c}"/>"#,
            pts[0].0, pts[0].1
        );
        return;
    }
    let mut d = String::new();
    for (i, (x, y)) in pts.iter().enumerate() {
        let _ = write!(d, "{}{x:.2},{y:.2}", if i == 0 { "M" } else { " L" });
    }
    let dash = if dashed {
        r#" stroke-dasharray="7 4""#
    } else {
        ""
    };
    let _ = write!(
        s,
        r#"<path d="{d}" fill="none" stroke="{c}" stroke-width="{LINE_W}" stroke-linejoin="round" stroke-linecap="round"{dash}/>"#
    );
}

fn collect_xy(p: &Panel) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (mut xs, mut ys, mut y2s) = (Vec::new(), Vec::new(), Vec::new());
    for m in &p.marks {
        match m {
            Mark::Line {
                points, right_axis, ..
            } => {
                for (x, y) in points {
                    xs.push(*x);
                    if *right_axis {
                        y2s.push(*y)
                    } else {
                        ys.push(*y)
                    }
                }
            }
            Mark::Scatter { points, .. } => {
                for (x, y) in points {
                    xs.push(*x);
                    ys.push(*y);
                }
            }
            Mark::Band { points, .. } => {
                for (x, lo, hi) in points {
                    xs.push(*x);
                    ys.push(*lo);
                    ys.push(*hi);
                }
            }
            Mark::Arrow { from, to, .. } => {
                xs.extend([from.0, to.0]);
                ys.extend([from.1, to.1]);
            }
            Mark::Label { .. } | Mark::VLine { .. } => {}
        }
    }
    (xs, ys, y2s)
}

fn tick_label_width(ticks: &[Tick]) -> f64 {
    ticks
        .iter()
        .map(|t| text_width(&t.label, TICK_SIZE))
        .fold(0.0, f64::max)
}

/// Draws one panel into the cell `(x0, y0, w, h)`; `id` makes its clip path unique.
fn draw_panel(s: &mut String, p: &Panel, x0: f64, y0: f64, w: f64, h: f64, id: usize) {
    let (xs, ys, y2s) = collect_xy(p);
    let (mut xlo, mut xhi) = fit_range(&p.x, &xs);
    let (mut ylo, mut yhi) = fit_range(&p.y, &ys);
    if p.marks.iter().any(|m| matches!(m, Mark::Label { .. })) {
        // Room for the text written to the right of and above each point.
        let (dx, dy) = (xhi - xlo, yhi - ylo);
        xlo -= dx * 0.04;
        xhi += dx * 0.14;
        yhi += dy * 0.07;
    }
    let y2r = p.y2.as_ref().map(|a| fit_range(a, &y2s));

    let entries = p.legend_entries();
    let top = if p.title.is_empty() { 10.0 } else { 32.0 };
    let mut right = 14.0;
    let mut bottom = 50.0;
    let below_rows = if p.legend == LegendPos::Below && !entries.is_empty() {
        legend_rows(&entries, w - 70.0)
    } else {
        Vec::new()
    };
    bottom += below_rows.len() as f64 * 19.0;
    let legend_right = p.legend == LegendPos::Right && !entries.is_empty();
    let (lw, lh) = legend_size(&entries);
    if legend_right {
        right += lw + 8.0;
    }
    let y_ticks0 = ticks_for(&p.y, ylo, yhi);
    let left = tick_label_width(&y_ticks0) + 36.0;
    let y2_ticks = match (&p.y2, y2r) {
        (Some(a), Some((lo, hi))) => ticks_for(a, lo, hi),
        _ => Vec::new(),
    };
    if p.y2.is_some() {
        right += tick_label_width(&y2_ticks) + 34.0;
    }
    let (px0, px1) = (x0 + left, x0 + w - right);
    let (py0, py1) = (y0 + top, y0 + h - bottom);
    if p.equal_aspect {
        let upp_x = (xhi - xlo) / (px1 - px0);
        let upp_y = (yhi - ylo) / (py1 - py0);
        if upp_x > upp_y {
            let extra = upp_x * (py1 - py0) - (yhi - ylo);
            ylo -= extra / 2.0;
            yhi += extra / 2.0;
        } else {
            let extra = upp_y * (px1 - px0) - (xhi - xlo);
            xlo -= extra / 2.0;
            xhi += extra / 2.0;
        }
    }
    let y_ticks = if p.equal_aspect {
        ticks_for(&p.y, ylo, yhi)
    } else {
        y_ticks0
    };
    let x_ticks = ticks_for(&p.x, xlo, xhi);
    let mx = Map {
        scale: p.x.scale,
        lo: xlo,
        hi: xhi,
        p0: px0,
        p1: px1,
    };
    let my = Map {
        scale: p.y.scale,
        lo: ylo,
        hi: yhi,
        p0: py1,
        p1: py0,
    };
    let my2 = y2r.zip(p.y2.as_ref()).map(|((lo, hi), a)| Map {
        scale: a.scale,
        lo,
        hi,
        p0: py1,
        p1: py0,
    });

    // Grid and ticks.
    let _ = write!(
        s,
        r##"<rect x="{px0:.1}" y="{py0:.1}" width="{:.1}" height="{:.1}" fill="#ffffff" stroke="none"/>"##,
        px1 - px0,
        py1 - py0
    );
    let x_labels = spaced_labels(&x_ticks, |v| mx.t(v));
    for (t, show) in x_ticks.iter().zip(&x_labels) {
        let Some(x) = mx.t(t.value) else { continue };
        let (stroke, len) = if t.major {
            ("#e3e3e3", 5.0)
        } else {
            ("#f2f2f2", 3.0)
        };
        let _ = write!(
            s,
            r#"<line x1="{x:.1}" y1="{py0:.1}" x2="{x:.1}" y2="{py1:.1}" stroke="{stroke}" stroke-width="1"/>"#
        );
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" y1="{py1:.1}" x2="{x:.1}" y2="{:.1}" stroke="#444" stroke-width="1"/>"##,
            py1 + len
        );
        if *show {
            text(
                s,
                x,
                py1 + 8.0,
                &t.label,
                TICK_SIZE,
                "middle",
                "hanging",
                None,
            );
        }
    }
    for t in &y_ticks {
        let Some(y) = my.t(t.value) else { continue };
        let (stroke, len) = if t.major {
            ("#e3e3e3", 5.0)
        } else {
            ("#f2f2f2", 3.0)
        };
        let _ = write!(
            s,
            r#"<line x1="{px0:.1}" y1="{y:.1}" x2="{px1:.1}" y2="{y:.1}" stroke="{stroke}" stroke-width="1"/>"#
        );
        let _ = write!(
            s,
            r##"<line x1="{:.1}" y1="{y:.1}" x2="{px0:.1}" y2="{y:.1}" stroke="#444" stroke-width="1"/>"##,
            px0 - len
        );
        if !t.label.is_empty() {
            text_styled(
                s,
                px0 - 8.0,
                y,
                &t.label,
                TICK_SIZE,
                "end",
                "middle",
                None,
                p.y.color.as_deref(),
                false,
            );
        }
    }
    if let (Some(m2), Some(a2)) = (my2, &p.y2) {
        for t in &y2_ticks {
            let Some(y) = m2.t(t.value) else { continue };
            let len = if t.major { 5.0 } else { 3.0 };
            let _ = write!(
                s,
                r##"<line x1="{px1:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#444" stroke-width="1"/>"##,
                px1 + len
            );
            if !t.label.is_empty() {
                text_styled(
                    s,
                    px1 + 8.0,
                    y,
                    &t.label,
                    TICK_SIZE,
                    "start",
                    "middle",
                    None,
                    a2.color.as_deref(),
                    false,
                );
            }
        }
        let lx = px1 + tick_label_width(&y2_ticks) + 26.0;
        text_styled(
            s,
            lx,
            (py0 + py1) / 2.0,
            &a2.label,
            LABEL_SIZE,
            "middle",
            "middle",
            Some(90.0),
            a2.color.as_deref(),
            false,
        );
    }

    // Data, clipped to the plotting area.
    let _ = write!(
        s,
        r#"<clipPath id="clip{id}"><rect x="{px0:.1}" y="{:.1}" width="{:.1}" height="{:.1}"/></clipPath><g clip-path="url(#clip{id})">"#,
        py0 - 2.0,
        px1 - px0,
        py1 - py0 + 4.0
    );
    for m in &p.marks {
        match m {
            Mark::Band { color, points } => {
                let upper: Vec<(f64, f64)> = points
                    .iter()
                    .filter_map(|(x, _, hi)| Some((mx.t(*x)?, my.t(*hi)?)))
                    .collect();
                let lower: Vec<(f64, f64)> = points
                    .iter()
                    .rev()
                    .filter_map(|(x, lo, _)| Some((mx.t(*x)?, my.t(*lo)?)))
                    .collect();
                if upper.len() >= 2 && lower.len() >= 2 {
                    let pts: Vec<String> = upper
                        .iter()
                        .chain(lower.iter())
                        .map(|(x, y)| format!("{x:.2},{y:.2}"))
                        .collect();
                    let _ = write!(
                        s,
                        r#"<polygon points="{}" fill="{color}" fill-opacity="0.18" stroke="none"/>"#,
                        pts.join(" ")
                    );
                }
            }
            Mark::VLine { x, color, .. } => {
                if let Some(px) = mx.t(*x) {
                    let _ = write!(
                        s,
                        r#"<line x1="{px:.1}" y1="{py0:.1}" x2="{px:.1}" y2="{py1:.1}" stroke="{color}" stroke-width="1.3" stroke-dasharray="4 3" stroke-opacity="0.85"/>"#
                    );
                }
            }
            _ => {}
        }
    }
    for m in &p.marks {
        match m {
            Mark::Line {
                color,
                points,
                dashed,
                right_axis,
                ..
            } => {
                let ym = if *right_axis { my2.unwrap_or(my) } else { my };
                let pts: Vec<(f64, f64)> = points
                    .iter()
                    .filter_map(|(x, y)| Some((mx.t(*x)?, ym.t(*y)?)))
                    .collect();
                polyline(s, &pts, color, *dashed);
            }
            Mark::Arrow {
                from,
                to,
                color,
                dashed,
            } => {
                if let (Some(a), Some(b), Some(c), Some(d)) =
                    (mx.t(from.0), my.t(from.1), mx.t(to.0), my.t(to.1))
                {
                    let (dx, dy) = (c - a, d - b);
                    let len = (dx * dx + dy * dy).sqrt().max(1e-9);
                    // Stop short of the target marker so the head stays visible.
                    let shrink = 5.0_f64.min(len * 0.3);
                    let end = (c - dx / len * shrink, d - dy / len * shrink);
                    let dash = if *dashed {
                        r#" stroke-dasharray="5 3""#
                    } else {
                        ""
                    };
                    let _ = write!(
                        s,
                        r#"<line x1="{a:.1}" y1="{b:.1}" x2="{:.1}" y2="{:.1}" stroke="{color}" stroke-width="1.4" stroke-opacity="0.9"{dash}/>"#,
                        end.0 - dx / len * 4.0,
                        end.1 - dy / len * 4.0
                    );
                    arrow_head(s, (a, b), end, color);
                }
            }
            _ => {}
        }
    }
    let mut placed = LabelPlacer::default();
    for m in &p.marks {
        match m {
            Mark::Scatter {
                color,
                shape,
                points,
                ..
            } => {
                for (x, y) in points {
                    if let (Some(px), Some(py)) = (mx.t(*x), my.t(*y)) {
                        draw_shape(s, *shape, px, py, 5.0, color);
                    }
                }
            }
            Mark::Label { at, text: t } => {
                if let (Some(px), Some(py)) = (mx.t(at.0), my.t(at.1))
                    && let Some((x, y, anchor)) = placed.place(px, py, t)
                {
                    let _ = write!(
                        s,
                        r##"<text x="{x:.1}" y="{y:.1}" font-size="{SMALL_SIZE}" text-anchor="{anchor}" fill="#333" stroke="#ffffff" stroke-width="2.5" paint-order="stroke" stroke-linejoin="round">{}</text>"##,
                        esc(t)
                    );
                }
            }
            Mark::VLine {
                x,
                color,
                label: Some(l),
            } => {
                if let Some(px) = mx.t(*x) {
                    let ax = px + 2.0 + SMALL_SIZE * 0.8;
                    if let Some(ay) = placed.place_vertical(ax, py0 + 6.0, py1, l) {
                        let _ = write!(
                            s,
                            r##"<text x="{ax:.1}" y="{ay:.1}" font-size="{SMALL_SIZE}" fill="{color}" text-anchor="end" stroke="#ffffff" stroke-width="3" paint-order="stroke" stroke-linejoin="round" transform="rotate(-90 {ax:.1} {ay:.1})">{}</text>"##,
                            esc(l)
                        );
                    }
                }
            }
            _ => {}
        }
    }
    s.push_str("</g>");

    // Frame, title, axis labels, legend.
    let _ = write!(
        s,
        r##"<rect x="{px0:.1}" y="{py0:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="#444" stroke-width="1"/>"##,
        px1 - px0,
        py1 - py0
    );
    if !p.title.is_empty() {
        let centre = (px0 + px1) / 2.0;
        let avail = 2.0 * (centre - x0).min(x0 + w - centre) - 12.0;
        let mut title = p.title.clone();
        while text_width(&title, TITLE_SIZE) > avail && title.chars().count() > 8 {
            title = truncate(&title, title.chars().count() - 1);
        }
        text_styled(
            s,
            (px0 + px1) / 2.0,
            y0 + 18.0,
            &title,
            TITLE_SIZE,
            "middle",
            "middle",
            None,
            None,
            true,
        );
    }
    text(
        s,
        (px0 + px1) / 2.0,
        py1 + 30.0,
        &p.x.label,
        LABEL_SIZE,
        "middle",
        "hanging",
        None,
    );
    text_styled(
        s,
        x0 + 14.0,
        (py0 + py1) / 2.0,
        &p.y.label,
        LABEL_SIZE,
        "middle",
        "middle",
        Some(-90.0),
        p.y.color.as_deref(),
        false,
    );
    if legend_right {
        let lx = x0 + w - lw - 10.0;
        let _ = write!(
            s,
            r##"<rect x="{lx:.1}" y="{py0:.1}" width="{lw:.1}" height="{lh:.1}" fill="#ffffff" stroke="#cccccc" rx="3"/>"##
        );
        draw_legend(s, &entries, lx, py0);
    }
    for (r, row) in below_rows.iter().enumerate() {
        let yy = py1 + 60.0 + r as f64 * 19.0;
        for (i, off) in row {
            let e = &entries[*i];
            draw_swatch(s, e, px0 + off, yy);
            text(
                s,
                px0 + off + 32.0,
                yy,
                &truncate(&e.label, LEGEND_MAX_CHARS),
                LEGEND_SIZE,
                "start",
                "middle",
                None,
            );
        }
    }
}

impl Figure {
    pub fn new(title: Option<String>, cols: usize, panel_w: f64, panel_h: f64) -> Self {
        Self {
            title,
            cols: cols.max(1),
            panel_w,
            panel_h,
            panels: Vec::new(),
            shared_legend: Vec::new(),
        }
    }

    /// Width and height in SVG user units (CSS px).
    pub fn size(&self) -> (f64, f64) {
        let cols = self.cols.min(self.panels.len().max(1));
        let rows = self.panels.len().div_ceil(self.cols).max(1);
        let legend_w = if self.shared_legend.is_empty() {
            0.0
        } else {
            legend_size(&self.shared_legend).0 + 20.0
        };
        let title_h = if self.title.is_some() { 34.0 } else { 0.0 };
        let legend_h = if self.shared_legend.is_empty() {
            0.0
        } else {
            legend_size(&self.shared_legend).1 + title_h + 20.0
        };
        // Wide enough for the title too (bold DejaVu runs about 12% wider than regular).
        let title_w = self
            .title
            .as_deref()
            .map_or(0.0, |t| 1.12 * text_width(t, FIG_TITLE_SIZE) + 32.0);
        let w = (cols as f64 * self.panel_w + legend_w).max(title_w);
        let h = (title_h + rows as f64 * self.panel_h).max(legend_h);
        (w.round(), h.round())
    }

    /// The figure as a standalone SVG document.
    pub fn to_svg(&self) -> String {
        let (w, h) = self.size();
        let mut s = String::new();
        let _ = write!(
            s,
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="{FONT}, sans-serif"><rect width="100%" height="100%" fill="#ffffff"/>"##
        );
        let title_h = if let Some(t) = &self.title {
            text_styled(
                &mut s,
                w / 2.0,
                18.0,
                t,
                FIG_TITLE_SIZE,
                "middle",
                "middle",
                None,
                None,
                true,
            );
            34.0
        } else {
            0.0
        };
        for (i, p) in self.panels.iter().enumerate() {
            let (c, r) = (i % self.cols, i / self.cols);
            draw_panel(
                &mut s,
                p,
                c as f64 * self.panel_w,
                title_h + r as f64 * self.panel_h,
                self.panel_w,
                self.panel_h,
                i,
            );
        }
        if !self.shared_legend.is_empty() {
            let cols = self.cols.min(self.panels.len().max(1));
            let lx = cols as f64 * self.panel_w + 4.0;
            let (lw, lh) = legend_size(&self.shared_legend);
            let _ = write!(
                s,
                r##"<rect x="{lx:.1}" y="{:.1}" width="{lw:.1}" height="{lh:.1}" fill="#ffffff" stroke="#cccccc" rx="3"/>"##,
                title_h + 32.0
            );
            draw_legend(&mut s, &self.shared_legend, lx, title_h + 32.0);
        }
        s.push_str("</svg>\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_labels_side_by_side_are_stacked() {
        let mut p = LabelPlacer::default();
        let len = "paper 64".len() as f64 * SMALL_SIZE * 0.6;
        assert_eq!(p.place_vertical(100.0, 10.0, 300.0, "paper 64"), Some(10.0));
        // A line 4 px away: its label goes below the first.
        assert_eq!(
            p.place_vertical(104.0, 10.0, 300.0, "paper 64"),
            Some(10.0 + len + 4.0)
        );
        // Far enough: at the top again.
        assert_eq!(p.place_vertical(130.0, 10.0, 300.0, "paper 64"), Some(10.0));
        // No room left below: left out.
        assert_eq!(
            p.place_vertical(102.0, 10.0, 10.0 + 2.5 * len, "paper 64"),
            None
        );
    }

    #[test]
    fn labels_never_overlap_and_try_every_corner() {
        let mut p = LabelPlacer::default();
        assert_eq!(p.place(100.0, 100.0, "e_1"), Some((106.0, 95.0, "start")));
        // The same point again: below right, then the two left corners, then nothing.
        assert_eq!(p.place(100.0, 100.0, "e_2"), Some((106.0, 115.0, "start")));
        assert_eq!(p.place(100.0, 100.0, "e_3").map(|l| l.2), Some("end"));
        assert_eq!(p.place(100.0, 100.0, "e_4").map(|l| l.2), Some("end"));
        assert_eq!(p.place(100.0, 100.0, "e_5"), None);
        // Far away is free again.
        assert!(p.place(300.0, 300.0, "e_6").is_some());
        for (i, a) in p.boxes.iter().enumerate() {
            for b in &p.boxes[i + 1..] {
                assert!(
                    a.2 <= b.0 || b.2 <= a.0 || a.3 <= b.1 || b.3 <= a.1,
                    "{a:?} {b:?}"
                );
            }
        }
    }

    #[test]
    fn linear_ticks_are_nice_and_inside() {
        let t = linear_ticks(0.0, 1.0);
        let v: Vec<f64> = t.iter().map(|t| t.value).collect();
        assert_eq!(v, vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]);
        let l: Vec<&str> = t.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(l, vec!["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]);
        let l: Vec<String> = linear_ticks(-0.02, 1.02)
            .into_iter()
            .map(|t| t.label)
            .collect();
        assert_eq!(l, vec!["0.00", "0.25", "0.50", "0.75", "1.00"]);
        let t = linear_ticks(-0.04, 1.04);
        assert_eq!(t.first().map(|t| t.value), Some(0.0));
        assert!(linear_ticks(1.0, 1.0).is_empty());
    }

    #[test]
    fn log_ticks_label_decades_and_short_ranges() {
        let t = log_ticks(1.0, 1e5);
        let labelled: Vec<&str> = t
            .iter()
            .filter(|t| !t.label.is_empty())
            .map(|t| t.label.as_str())
            .collect();
        assert_eq!(labelled, vec!["10⁰", "10¹", "10²", "10³", "10⁴", "10⁵"]);
        assert_eq!(t.len(), 5 * 9 + 1);
        let t = log_ticks(30.0, 400.0);
        let labelled: Vec<&str> = t
            .iter()
            .filter(|t| !t.label.is_empty())
            .map(|t| t.label.as_str())
            .collect();
        assert_eq!(labelled, vec!["50", "100", "200"]);
        // A range reaching below 1 labels every decade alike.
        let labelled: Vec<String> = log_ticks(0.008, 4.0)
            .into_iter()
            .filter(|t| !t.label.is_empty())
            .map(|t| t.label)
            .collect();
        assert_eq!(labelled, vec!["10⁻²", "10⁻¹", "10⁰"]);
    }

    #[test]
    fn numbers_are_formatted_for_their_spacing() {
        assert_eq!(fmt_num(0.25, 0.05), "0.25");
        assert_eq!(fmt_num(1500.0, 500.0), "1500");
        assert_eq!(fmt_num(2e5, 1e5), "2×10⁵");
        assert_eq!(fmt_num(-0.0001, 0.0001), "-1×10⁻⁴");
    }

    #[test]
    fn a_figure_is_wide_enough_for_its_title() {
        let panel = || {
            Panel::new(
                "p",
                Axis::new("x", Scale::Linear),
                Axis::new("y", Scale::Linear),
            )
        };
        let mut short = Figure::new(Some("Fig. 3".into()), 1, 400.0, 300.0);
        short.panels.push(panel());
        assert_eq!(
            short.size().0,
            400.0,
            "a short title leaves the width alone"
        );
        let long = "Fig. 3: weight decay [scale small] (mean, band min–max over seeds)";
        let mut wide = Figure::new(Some(long.into()), 1, 400.0, 300.0);
        wide.panels.push(panel());
        let (w, _) = wide.size();
        assert!(
            w > 400.0 && w >= text_width(long, FIG_TITLE_SIZE) + 16.0,
            "{w}"
        );
        // The title is centred on the widened figure.
        let svg = wide.to_svg();
        assert!(svg.contains(&format!(r#"x="{:.1}""#, w / 2.0)), "{svg}");
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(esc("<e_3> & \"f\""), "&lt;e_3&gt; &amp; &quot;f&quot;");
    }
}
