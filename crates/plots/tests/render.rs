//! Renders every plot from a synthetic run directory and checks the files: PNGs decode with the
//! size the SVG declares (times the PNG scale), SVGs parse with an `<svg>` root, and the report
//! is one page with its images inside. Set `PLOTS_SAMPLE_DIR` to keep the synthetic run for viewing.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plots::{
    BandKind, OnsetMarker, PNG_SCALE, PcaPoint, PcaSnapshot, PlotError, RunMetrics, Series,
    SweepGroup, SweepPanel,
};

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// A run whose curves look like the paper's: memorisation, then composition, then analogy.
fn write_run(dir: &Path, seed: f64, with_geometry: bool) {
    std::fs::create_dir_all(dir).unwrap();
    let mut m = String::new();
    let onsets = [
        ("id_atomic", 40.0),
        ("ood_atomic", 60.0),
        ("id_compositional", 70.0),
        ("near_ood_compositional", 100.0),
        ("far_ood_compositional", 400.0),
        ("id_analogical", 90.0),
        ("ood_analogical", 180.0 * seed),
    ];
    for step in 1..=2000u64 {
        let s = step as f64;
        if step % 10 == 1 {
            let acc = sigmoid((s.ln() - 55f64.ln()) * 4.0);
            let _ = writeln!(
                m,
                r#"{{"global_step": {step}, "train/CE_last": {}, "train/ACC_last": {acc}, "train/PROB_last": {acc}, "lr": 0.0001}}"#,
                4.0 * (1.0 - acc) + 0.01
            );
        }
        if step % 20 == 0 {
            let _ = write!(
                m,
                r#"{{"global_step": {step}, "epoch": {}, "train/CE_epoch": 1.0, "val/macro/CE": {}, "val/macro/ACC": 0.5, "unknown/new_key": [1, 2]"#,
                step / 20,
                3.0 / s.sqrt()
            );
            for (t, on) in onsets {
                let a = sigmoid((s.ln() - f64::ln(on)) * 5.0);
                let ce = 3.0 * (1.0 - a) + 0.02;
                let _ = write!(
                    m,
                    r#", "val_CE/{t}": {ce}, "val_PPL/{t}": {}, "val_ACC/{t}": {a}, "val_PROB/{t}": {a}, "val_N/{t}": 100"#,
                    ce.exp()
                );
            }
            m.push_str("}\n");
            if with_geometry {
                let a = sigmoid((s.ln() - f64::ln(150.0 * seed)) * 4.0);
                let _ = writeln!(
                    m,
                    r#"{{"global_step": {step}, "geom/dirichlet_energy": {}, "geom/dirichlet_energy_head": {}, "geom/translation_consistency": {}, "geom/parallelogram": {}, "geom/analogy_addition": {}, "geom/isometry": {}, "geom/cluster_separation": {}, "geom/attn_progress/id_analogical": {}, "geom/attn_progress/ood_analogical": {}, "geom/parallelism/id_analogical": {}, "geom/parallelism/ood_analogical": {}, "geom/hit1": {a}, "geom/mrr": {}, "geom/new_metric": null}}"#,
                    1.8 - 1.5 * a,
                    1.9 - 1.2 * a,
                    0.2 + 0.7 * a,
                    0.9 * a - 0.05,
                    0.8 * a,
                    0.3 + 0.6 * a,
                    0.5 + 3.0 * a,
                    0.1 + 0.8 * a,
                    0.1 + 0.7 * a,
                    0.85 * a,
                    0.8 * a,
                    0.3 + 0.7 * a
                );
            }
        }
    }
    std::fs::write(dir.join("metrics.jsonl"), m).unwrap();
    std::fs::write(
        dir.join("config.toml"),
        "d_model = 128\nrun_name = \"<script>alert(1)</script>\"\n[data]\nnum_entities = 20\n",
    )
    .unwrap();
    if with_geometry {
        let mut p = String::new();
        for (k, step) in [10u64, 100, 300, 1000, 2000].iter().enumerate() {
            let align = k as f64 / 4.0;
            let mut pts = Vec::new();
            let mut arrows = Vec::new();
            for i in 0..10 {
                let ang = i as f64 * 0.628;
                let (x, y) = (ang.cos() * 2.0, ang.sin() * 2.0);
                let (x2, y2) = (
                    x * align + (1.0 - align) * (-y * 1.5) + 3.0 * align,
                    y * align + (1.0 - align) * (x * 1.5) + 1.0,
                );
                pts.push(format!(
                    r#"{{"token": "<e_{i}>", "group": "E1", "x": {x}, "y": {y}}}"#
                ));
                pts.push(format!(
                    r#"{{"token": "<e_{}>", "group": "E2", "x": {x2}, "y": {y2}}}"#,
                    i + 10
                ));
                arrows.push(format!(
                    r#"{{"from": "<e_{i}>", "to": "<e_{}>", "ood": {}}}"#,
                    i + 10,
                    i % 5 == 0
                ));
            }
            pts.push(r#"{"token": "<f>", "group": "functor", "x": 0.5, "y": -2.5}"#.to_string());
            pts.push(r#"{"token": "<r_1>", "group": "other", "x": -2.5, "y": null}"#.to_string());
            pts.push(r#"{"token": "<r_2>", "group": "other", "x": -2.7, "y": 0.4}"#.to_string());
            let _ = writeln!(
                p,
                r#"{{"global_step": {step}, "points": [{}], "arrows": [{}]}}"#,
                pts.join(", "),
                arrows.join(", ")
            );
        }
        std::fs::write(dir.join("pca.jsonl"), p).unwrap();
    }
}

/// Checks a PNG/SVG pair: both parse, sizes agree, and the PNG is not a blank page.
fn check_pair(png_path: &Path) {
    let svg_path = png_path.with_extension("svg");
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg", "{}", svg_path.display());
    let w: f64 = root.attribute("width").unwrap().parse().unwrap();
    let h: f64 = root.attribute("height").unwrap().parse().unwrap();
    assert!(w >= 300.0 && h >= 200.0, "{w}x{h}");
    assert!(doc.descendants().any(|n| n.has_tag_name("text")));

    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(png_path).unwrap(),
    ));
    let mut reader = decoder.read_info().unwrap();
    let info = reader.info();
    assert_eq!(
        info.width,
        (w * PNG_SCALE as f64).round() as u32,
        "{}",
        png_path.display()
    );
    assert_eq!(info.height, (h * PNG_SCALE as f64).round() as u32);
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut buf).unwrap();
    let bytes = &buf[..frame.buffer_size()];
    // Dark pixels (text, axes, curves) must exist: a font failure or empty render would not have them.
    let dark = bytes
        .chunks(4)
        .filter(|p| p[0] < 80 && p[1] < 80 && p[2] < 80)
        .count();
    assert!(
        dark > 2000,
        "{} has only {dark} dark pixels",
        png_path.display()
    );
    let total = bytes.len() / 4;
    assert!(dark < total / 3, "{} is mostly dark", png_path.display());
}

fn sample_dir() -> (Option<tempfile::TempDir>, PathBuf) {
    match std::env::var_os("PLOTS_SAMPLE_DIR") {
        Some(d) => {
            let d = PathBuf::from(d);
            std::fs::create_dir_all(&d).unwrap();
            (None, d)
        }
        None => {
            let t = tempfile::tempdir().unwrap();
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    }
}

#[test]
fn every_run_plot_renders() {
    let (_keep, root) = sample_dir();
    let run = root.join("run_a");
    write_run(&run, 1.0, true);
    let files = plots::write_run_plots(&run).unwrap();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for stem in ["accuracy", "loss", "energy", "geometry", "pca"] {
        for ext in ["png", "svg"] {
            assert!(
                names.contains(&format!("{stem}.{ext}")),
                "{stem}.{ext} missing: {names:?}"
            );
        }
    }
    for f in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "png"))
    {
        assert!(f.starts_with(run.join("plots")));
        check_pair(f);
    }
    // The geometry figure has the extra key as its own panel, and nothing for the all-null one.
    let svg = std::fs::read_to_string(run.join("plots/geometry.svg")).unwrap();
    assert!(svg.contains("Cluster separation"));
    assert!(!svg.contains("new_metric"));
}

#[test]
fn old_runs_without_geometry_get_the_plots_they_can() {
    let d = tempfile::tempdir().unwrap();
    let run = d.path().join("old");
    write_run(&run, 1.0, false);
    let files = plots::write_run_plots(&run).unwrap();
    let mut names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec!["accuracy.png", "accuracy.svg", "loss.png", "loss.svg"]
    );
    let out = d.path().join("report.html");
    let summary = plots::report(std::slice::from_ref(&run), &out).unwrap();
    assert_eq!(summary.plots.len(), 4);
}

/// Every `src`/`href` value of the page.
fn links(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for attr in ["src=\"", "href=\""] {
        let mut rest = html;
        while let Some(i) = rest.find(attr) {
            rest = &rest[i + attr.len()..];
            let end = rest.find('"').unwrap();
            out.push(rest[..end].to_string());
            rest = &rest[end..];
        }
    }
    out
}

fn set_config(run: &Path, lr: &str, seed: u64) {
    std::fs::write(
        run.join("config.toml"),
        format!(
            "[model]\nd_model = 32\n[train]\nlr = {lr}\nseed = {seed}\nsave_dir = \"{}\"\n[wandb]\nrun_name = \"<script>alert(1)</script>\"\n",
            run.display()
        ),
    )
    .unwrap();
}

#[test]
fn report_over_a_sweep_directory_is_one_self_contained_page() {
    use base64::Engine as _;
    let (_keep, root) = sample_dir();
    let sweep = root.join("sweep");
    let runs = [
        sweep.join("lr-high/seed_1"),
        sweep.join("lr-high/seed_2"),
        sweep.join("lr-low/seed_1"),
    ];
    for (run, (lr, seed, jitter)) in
        runs.iter()
            .zip([("0.1", 1, 1.0), ("0.1", 2, 1.3), ("0.01", 1, 1.6)])
    {
        write_run(run, jitter, true);
        set_config(run, lr, seed);
    }
    // A stray directory without metrics is not a run.
    std::fs::create_dir_all(sweep.join("logs")).unwrap();
    assert_eq!(
        plots::find_runs(std::slice::from_ref(&sweep)).unwrap(),
        runs
    );

    let out = root.join("out/report.html");
    let summary = plots::report(std::slice::from_ref(&sweep), &out).unwrap();
    let html = std::fs::read_to_string(&summary.html).unwrap();
    // Nothing outside the page: in-page anchors and data URIs only.
    let links = links(&html);
    let images: Vec<&String> = links.iter().filter(|l| l.starts_with("data:")).collect();
    for l in &links {
        assert!(
            l.starts_with('#') || l.starts_with("data:image/png;base64,"),
            "{l}"
        );
    }
    // 5 plots per run, 6 comparison plots.
    assert_eq!(images.len(), 3 * 5 + 6);
    for img in &images {
        let png = base64::engine::general_purpose::STANDARD
            .decode(img.trim_start_matches("data:image/png;base64,"))
            .unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert!(png.len() > 5000);
    }
    // The comparison plots' scratch files are gone; each run's plots stay in its directory.
    let beside: Vec<String> = std::fs::read_dir(root.join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(beside, vec!["report.html"]);
    for p in summary
        .plots
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
    {
        check_pair(p);
    }
    assert_eq!(summary.plots.len(), 3 * 5 * 2);
    // Keys that differ between runs, the run's own directory excluded.
    let table = &html[html.find("Configuration keys that differ").unwrap()..];
    let table = &table[..table.find("</table>").unwrap()];
    assert!(
        table.contains("<th>lr</th>") && table.contains("<th>seed</th>"),
        "{table}"
    );
    assert!(
        !table.contains("save_dir") && !table.contains("d_model"),
        "{table}"
    );
    assert!(table.contains("<td>0.01</td>"));
    // Two experiments: lr 0.1 over two seeds, lr 0.01 over one.
    assert!(html.contains("<li>lr = 0.1: lr-high/seed_1, lr-high/seed_2</li>"));
    assert!(html.contains("<li>lr = 0.01: lr-low/seed_1</li>"));
    assert!(html.contains("the mean over its seeds; the band spans their minimum to maximum"));
    // The config is shown verbatim but escaped.
    assert!(html.contains("run_name = &quot;&lt;script&gt;alert(1)&lt;/script&gt;&quot;"));
    assert!(!html.contains("<script>"));
    // The final table is the last epoch row (step 2000 of the synthetic run).
    assert!(html.contains("global step 2000"));
    assert!(html.contains("<td>near_ood_compositional</td>"));
}

#[test]
fn report_of_a_directory_without_runs_says_so() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("empty/sub")).unwrap();
    let err = plots::report(&[d.path().join("empty")], &d.path().join("r.html")).unwrap_err();
    assert!(err.to_string().contains("no run directory"), "{err}");
    assert!(err.to_string().contains("empty"), "{err}");
    assert!(!d.path().join("r.html").exists());
    let err = plots::find_runs(&[d.path().join("missing")]).unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
    std::fs::write(d.path().join("file"), "").unwrap();
    let err = plots::find_runs(&[d.path().join("file")]).unwrap_err();
    assert!(err.to_string().contains("not a directory"), "{err}");
}

#[test]
fn overlay_and_sweep_render() {
    let (_keep, root) = sample_dir();
    let mut groups = Vec::new();
    for (gi, onset) in [150.0, 300.0, 1000.0, 3000.0].iter().enumerate() {
        let mut runs = Vec::new();
        for seed in 0..3 {
            let jitter = 1.0 + 0.15 * (seed as f64 - 1.0);
            let pts = (0..60)
                .map(|k| {
                    let step = (10f64.powf(1.0 + k as f64 * 3.0 / 59.0)).round() as u64;
                    let a = sigmoid(((step as f64).ln() - (onset * jitter).ln()) * 4.0);
                    (step, a)
                })
                .collect();
            runs.push(Series::new(pts));
        }
        groups.push(SweepGroup {
            label: format!("|E| = {}", 10 * (gi + 1)),
            runs,
        });
    }
    let markers = [150.0, 300.0, 1000.0, 3000.0]
        .iter()
        .enumerate()
        .map(|(i, s)| OnsetMarker {
            step: *s,
            label: format!("paper |E|={}", 10 * (i + 1)),
            group: Some(i),
        })
        .collect();
    let panel = SweepPanel {
        title: "OOD analogical accuracy".to_string(),
        y_label: "accuracy".to_string(),
        groups: groups.clone(),
        markers,
        band: BandKind::MinMax,
        y_range: Some((-0.02, 1.02)),
    };
    let mut second = panel.clone();
    second.title = "near-OOD compositional accuracy".to_string();
    second.markers.clear();
    second.band = BandKind::Std;
    let f = plots::sweep_plot(
        "Fig. 2: entities",
        &[panel, second],
        &root.join("sweep/fig2"),
    )
    .unwrap();
    check_pair(&f.png);

    let a = root.join("ov/a");
    let b = root.join("ov/b");
    write_run(&a, 1.0, false);
    write_run(&b, 2.0, false);
    let ma = RunMetrics::read(&a.join("metrics.jsonl")).unwrap();
    let mb = RunMetrics::read(&b.join("metrics.jsonl")).unwrap();
    let f = plots::overlay_plot(
        &[("a".to_string(), &ma), ("b".to_string(), &mb)],
        "val_ACC/ood_analogical",
        &root.join("ov/overlay"),
    )
    .unwrap();
    check_pair(&f.png);
    let err = plots::overlay_plot(&[("a".to_string(), &ma)], "geom/mrr", &root.join("ov/none"));
    assert!(matches!(err, Err(PlotError::NoData { .. })));
}

#[test]
fn broken_metrics_line_is_reported_with_file_and_line() {
    let d = tempfile::tempdir().unwrap();
    let run = d.path().join("broken");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(
        run.join("metrics.jsonl"),
        "{\"global_step\": 1, \"train/ACC_last\": 0.1}\n\n{\"global_step\": 2, oops}\n",
    )
    .unwrap();
    let err = plots::write_run_plots(&run).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("metrics.jsonl:3:"), "{msg}");
    let err = plots::report(&[], &d.path().join("r.html")).unwrap_err();
    assert!(matches!(err, PlotError::NoRuns { .. }));
}

#[test]
fn the_pca_legend_lists_only_what_is_drawn_and_labels_do_not_overlap() {
    let d = tempfile::tempdir().unwrap();
    let point = |i: usize, group: &str, x: f64, y: f64| PcaPoint {
        token: format!("<e_{i}>"),
        group: group.to_string(),
        x,
        y,
    };
    // Twenty entities, ten per group: nineteen crowded near the origin, one far out.
    let points: Vec<PcaPoint> = (0..20)
        .map(|i| {
            let a = i as f64 * 0.9;
            let g = if i < 10 { "E1" } else { "E2" };
            let r = if i == 19 { 40.0 } else { 0.3 };
            point(i, g, a.cos() * r, a.sin() * r)
        })
        .collect();
    let snap = PcaSnapshot {
        global_step: 24,
        requested_steps: Some(vec![20]),
        points,
        arrows: Vec::new(),
    };
    let files = plots::pca_plot(&[snap], "PCA", &d.path().join("pca")).unwrap();
    check_pair(&files.png);
    let svg = std::fs::read_to_string(&files.svg).unwrap();
    assert!(svg.contains("E1 entities") && svg.contains("E2 entities"));
    assert!(
        !svg.contains("functor &lt;f&gt;"),
        "legend lists the functor"
    );
    assert!(!svg.contains("other tokens"), "legend lists other tokens");
    assert!(svg.contains("step 24 (epoch end after 20)"));
    // Labels placed: some, but not all twenty on top of each other.
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let labels: Vec<(f64, f64, f64, bool)> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter(|n| n.text().is_some_and(|t| t.starts_with("e_")))
        .map(|n| {
            let x: f64 = n.attribute("x").unwrap().parse().unwrap();
            let y: f64 = n.attribute("y").unwrap().parse().unwrap();
            let w = n.text().unwrap().chars().count() as f64 * 6.0 - 0.1;
            (
                x,
                y,
                w,
                n.attribute("text-anchor").unwrap_or("start") == "end",
            )
        })
        .collect();
    assert!(
        labels.len() >= 4 && labels.len() < 20,
        "{} labels",
        labels.len()
    );
    let boxes: Vec<(f64, f64, f64, f64)> = labels
        .iter()
        .map(|&(x, y, w, end)| {
            let x0 = if end { x - w } else { x };
            (x0, y - 9.9, x0 + w, y + 1.9)
        })
        .collect();
    for (i, a) in boxes.iter().enumerate() {
        for b in &boxes[i + 1..] {
            assert!(
                a.2 <= b.0 || b.2 <= a.0 || a.3 <= b.1 || b.3 <= a.1,
                "{a:?} overlaps {b:?}"
            );
        }
    }
}

#[test]
fn a_published_record_with_gzipped_metrics_reads_as_the_run() {
    use std::io::Write as _;
    let d = tempfile::tempdir().unwrap();
    let run = d.path().join("record/seed_1");
    write_run(&run, 1.0, true);
    let plain = plots::RunMetrics::read_run(&run).unwrap();
    for name in ["metrics.jsonl", "pca.jsonl"] {
        let text = std::fs::read(run.join(name)).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&text).unwrap();
        std::fs::write(run.join(format!("{name}.gz")), gz.finish().unwrap()).unwrap();
        std::fs::remove_file(run.join(name)).unwrap();
    }
    assert_eq!(plots::metrics_path(&run), run.join("metrics.jsonl.gz"));
    assert_eq!(plots::RunMetrics::read_run(&run).unwrap(), plain);
    assert_eq!(plain.last_epoch(), Some(100));
    assert_eq!(
        plots::find_runs(&[d.path().join("record")]).unwrap(),
        vec![run.clone()]
    );
    let files = plots::write_run_plots(&run).unwrap();
    assert_eq!(files.len(), 10, "{files:?}");
    // A corrupt archive names the file.
    std::fs::write(run.join("metrics.jsonl.gz"), b"not gzip").unwrap();
    let err = plots::RunMetrics::read_run(&run).unwrap_err();
    assert!(err.to_string().contains("metrics.jsonl.gz"), "{err}");
}
