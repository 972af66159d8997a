//! Reading run files: `metrics.jsonl` into per-key series, `pca.jsonl` into snapshots.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use run_config::keys::{self, FactType, TypeMetric};

use crate::error::{PlotError, Result, io_err};

/// The names of the fact types of `test.json`, in the order the paper lists them (tables and
/// legends use it).
pub fn fact_type_names() -> impl Iterator<Item = &'static str> {
    FactType::ALL.into_iter().map(FactType::as_str)
}

/// One metric over training: `(global_step, value)` points in file order, finite values only.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    /// The points, in the order they were logged (normally increasing step).
    pub points: Vec<(u64, f64)>,
}

impl Series {
    /// A series from its points.
    pub fn new(points: Vec<(u64, f64)>) -> Self {
        Self { points }
    }

    /// The last point logged, if any.
    pub fn last(&self) -> Option<(u64, f64)> {
        self.points.last().copied()
    }

    /// True when there is no point.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }
}

/// Everything `metrics.jsonl` of one run says, by key.
///
/// Every key is optional: runs of earlier versions lack the geometry keys, keys added later are
/// kept like any other, and `null` values (the trainer writes non-finite numbers as `null`) are
/// skipped. Rows without `global_step` cannot be placed on a step axis and are ignored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunMetrics {
    series: BTreeMap<String, Series>,
    last_epoch: Option<BTreeMap<String, f64>>,
}

impl RunMetrics {
    /// Reads `path` (a `metrics.jsonl`).
    ///
    /// # Errors
    /// [`PlotError::Io`] when the file cannot be read, [`PlotError::BadLine`] (with file and line)
    /// when a non-empty line is not a JSON object.
    pub fn read(path: &Path) -> Result<Self> {
        Self::parse(&read_text(path)?, path)
    }

    /// Reads the metrics of a run directory: its `metrics.jsonl`, or the `metrics.jsonl.gz` of
    /// a published record.
    ///
    /// # Errors
    /// As [`RunMetrics::read`]; the error names `metrics.jsonl` when neither exists.
    pub fn read_run(run_dir: &Path) -> Result<Self> {
        Self::read(&metrics_path(run_dir))
    }

    /// The epoch of the last evaluation row (`None` without one).
    pub fn last_epoch(&self) -> Option<u64> {
        self.last_epoch_row()
            .and_then(|r| r.get(keys::EPOCH).copied())
            .map(|e| e as u64)
    }

    /// Parses the text of a `metrics.jsonl`; `path` only names the file in errors.
    ///
    /// # Errors
    /// [`PlotError::BadLine`] when a non-empty line is not a JSON object.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let mut out = Self::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let bad = |message: String| PlotError::BadLine {
                path: path.to_path_buf(),
                line: i + 1,
                message,
            };
            let row: Value = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
            let Value::Object(row) = row else {
                return Err(bad(format!("found {}", kind_of(&row))));
            };
            let Some(step) = row.get(keys::GLOBAL_STEP).and_then(as_step) else {
                continue;
            };
            let mut numbers = BTreeMap::new();
            for (key, value) in &row {
                if key == keys::GLOBAL_STEP {
                    continue;
                }
                if let Some(v) = value.as_f64().filter(|v| v.is_finite()) {
                    numbers.insert(key.clone(), v);
                    out.series
                        .entry(key.clone())
                        .or_default()
                        .points
                        .push((step, v));
                }
            }
            if row.contains_key(keys::EPOCH) {
                numbers.insert(keys::GLOBAL_STEP.to_string(), step as f64);
                out.last_epoch = Some(numbers);
            }
        }
        Ok(out)
    }

    /// The series of `key`, if any finite value of it was logged.
    pub fn get(&self, key: &str) -> Option<&Series> {
        self.series.get(key).filter(|s| !s.is_empty())
    }

    /// All keys with at least one finite value, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.series.keys().map(String::as_str)
    }

    /// The finite numeric values of the last row that has an `epoch` key (the final evaluation),
    /// with `global_step` included; `None` when no epoch row was logged.
    pub fn last_epoch_row(&self) -> Option<&BTreeMap<String, f64>> {
        self.last_epoch.as_ref()
    }

    /// The fact types that have a `val_ACC/<type>` series: the known ones in paper order, then any
    /// other type found (runs with extra types still plot them).
    pub fn fact_types(&self) -> Vec<String> {
        let mut found: Vec<String> = fact_type_names()
            .filter(|t| self.get(&keys::per_type_name(TypeMetric::Acc, t)).is_some())
            .map(str::to_string)
            .collect();
        for key in self.keys() {
            if let Some((TypeMetric::Acc, t)) = keys::parse_per_type(key)
                && !fact_type_names().any(|known| known == t)
            {
                found.push(t.to_string());
            }
        }
        found
    }
}

fn as_step(v: &Value) -> Option<u64> {
    if let Some(s) = v.as_u64() {
        return Some(s);
    }
    // Some writers emit integral floats (`120.0`); anything else is not a step.
    v.as_f64()
        .filter(|f| f.is_finite() && *f >= 0.0 && f.fract() == 0.0 && *f < 1e18)
        .map(|f| f as u64)
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A run's metrics file: `metrics.jsonl`, else `metrics.jsonl.gz` when only that exists (the
/// plain name when neither does, so that errors name it).
pub fn metrics_path(run_dir: &Path) -> PathBuf {
    let plain = run_dir.join(crate::report::METRICS_FILE);
    let gz = run_dir.join(format!("{}.gz", crate::report::METRICS_FILE));
    if !plain.exists() && gz.is_file() {
        gz
    } else {
        plain
    }
}

/// The text of a file, decompressed when its name ends in `.gz`.
fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(io_err("read", path))?;
    let bytes = if path.extension().is_some_and(|e| e == "gz") {
        use std::io::Read as _;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .map_err(io_err("decompress", path))?;
        out
    } else {
        bytes
    };
    String::from_utf8(bytes)
        .map_err(|e| io_err("read", path)(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
}

/// One entity-embedding PCA picture (paper Fig. 7) at one training step.
#[derive(Debug, Clone, PartialEq)]
pub struct PcaSnapshot {
    /// Optimiser step the embeddings were taken at.
    pub global_step: u64,
    /// The `pca_steps` this snapshot answers (taken at the end of the epoch that passed them);
    /// empty for the snapshot at the end of training; `None` in files of earlier versions.
    pub requested_steps: Option<Vec<u64>>,
    /// The projected tokens.
    pub points: Vec<PcaPoint>,
    /// Functor pairs `e → f(e)`, drawn as arrows.
    pub arrows: Vec<PcaArrow>,
}

/// A token's 2-D PCA coordinates.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PcaPoint {
    /// The token, e.g. `<e_3>`.
    pub token: String,
    /// `E1`, `E2`, `functor` or `other` (unknown groups are drawn like `other`).
    #[serde(default)]
    pub group: String,
    /// First principal coordinate.
    pub x: f64,
    /// Second principal coordinate.
    pub y: f64,
}

/// A functor pair drawn from `from` to `to`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PcaArrow {
    /// Source token (in E1).
    pub from: String,
    /// Target token (its image in E2).
    pub to: String,
    /// True when the pair's analogical fact is held out (OOD).
    #[serde(default)]
    pub ood: bool,
}

#[derive(Deserialize)]
struct PcaRecord {
    global_step: u64,
    #[serde(default)]
    requested_steps: Option<Vec<u64>>,
    #[serde(default)]
    points: Vec<RawPoint>,
    #[serde(default)]
    arrows: Vec<PcaArrow>,
}

#[derive(Deserialize)]
struct RawPoint {
    token: String,
    #[serde(default)]
    group: String,
    x: Option<f64>,
    y: Option<f64>,
}

/// Reads a `pca.jsonl` (one snapshot per line); points with a `null` coordinate are dropped.
///
/// # Errors
/// [`PlotError::Io`] when unreadable, [`PlotError::BadPca`] (file and line) when a line does not
/// have the documented shape.
pub fn read_pca(path: &Path) -> Result<Vec<PcaSnapshot>> {
    let text = read_text(path)?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let rec: PcaRecord = serde_json::from_str(line).map_err(|e| PlotError::BadPca {
            path: PathBuf::from(path),
            line: i + 1,
            message: e.to_string(),
        })?;
        let points = rec
            .points
            .into_iter()
            .filter_map(|p| match (p.x, p.y) {
                (Some(x), Some(y)) if x.is_finite() && y.is_finite() => Some(PcaPoint {
                    token: p.token,
                    group: p.group,
                    x,
                    y,
                }),
                _ => None,
            })
            .collect();
        out.push(PcaSnapshot {
            global_step: rec.global_step,
            requested_steps: rec.requested_steps,
            points,
            arrows: rec.arrows,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_nulls_unknown_keys_and_rows_without_step() {
        let text = r#"{"global_step": 1, "train/ACC_last": 0.5, "lr": null, "new/key": 3}
{"epoch": 0, "train/CE_epoch": 1.0}

{"global_step": 2.0, "epoch": 0, "val_ACC/id_atomic": 1, "val_ACC/zz_new": 0.25, "note": "x"}
"#;
        let m = RunMetrics::parse(text, Path::new("m.jsonl")).unwrap();
        assert_eq!(m.get("train/ACC_last").unwrap().points, vec![(1, 0.5)]);
        assert!(m.get("lr").is_none());
        assert_eq!(m.get("new/key").unwrap().points, vec![(1, 3.0)]);
        // The row without a step is not plotted.
        assert!(m.get("train/CE_epoch").is_none());
        let last = m.last_epoch_row().unwrap();
        assert_eq!(last.get("global_step"), Some(&2.0));
        assert_eq!(last.get("val_ACC/id_atomic"), Some(&1.0));
        assert!(!last.contains_key("note"));
        assert_eq!(m.fact_types(), vec!["id_atomic", "zz_new"]);
    }

    #[test]
    fn broken_line_names_file_and_line() {
        let text = "{\"global_step\": 1}\n{\"global_step\": 2,\n";
        let err = RunMetrics::parse(text, Path::new("run/metrics.jsonl")).unwrap_err();
        match &err {
            PlotError::BadLine { path, line, .. } => {
                assert_eq!(path, Path::new("run/metrics.jsonl"));
                assert_eq!(*line, 2);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().starts_with("run/metrics.jsonl:2:"));
        let err = RunMetrics::parse("[1, 2]\n", Path::new("a")).unwrap_err();
        assert!(err.to_string().contains("an array"), "{err}");
    }
}
