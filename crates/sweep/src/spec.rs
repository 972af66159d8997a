//! The sweep file: what varies, what is fixed, which seeds, and (for paper figures) how to draw
//! and shrink the figure.
//!
//! ```toml
//! name = "fig3-batch"                 # directory name of the sweep's runs
//! base = "base-config.toml"           # relative to this file, else to the working directory
//! method = "grid"                     # or "random" with `count` and `seed`
//! seeds = [1, 2, 3]                   # training seeds, the innermost loop
//!
//! [fixed]                             # flat config keys applied to every experiment
//! epochs = 100
//!
//! [parameters]                        # key → values; file order is the loop order
//! batch_size = [32, 64, 128, 256]
//! ```
//!
//! Keys are the flat keys of [`run_config::RunConfig`] (`lr`, `num_entities`, …) or qualified ones
//! (`data.seed`). A bare `seed` is the *training* seed and `data_seed` the generator's, as in the
//! flat W&B config. `data_dir` and `save_dir` are reserved: the sweep chooses them.

use std::path::{Path, PathBuf};

use run_config::RunConfig;
use serde::Deserialize;
use toml::Value;

use crate::error::{Result, SweepError, io_err};

/// How the parameter combinations are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Every combination (cartesian product), first parameter slowest.
    Grid,
    /// `count` distinct combinations drawn with the seeded generator `seed` (all of them, in grid
    /// order, when `count` is at least their number).
    Random {
        /// How many combinations.
        count: usize,
        /// Seed of the draw.
        seed: u64,
    },
}

/// A paper-reported onset drawn on a reproduced figure.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaperMarker {
    /// The metric panel it belongs to (e.g. `val_ACC/ood_analogical`).
    pub metric: String,
    /// The swept value it belongs to, in the text form of the value (e.g. `"64"`); none for a
    /// marker of the whole panel.
    #[serde(default)]
    pub value: Option<String>,
    /// The optimiser step the paper reports.
    pub step: f64,
    /// Text drawn along the line; defaults to `paper <value>`.
    #[serde(default)]
    pub label: Option<String>,
}

/// How `--scale <name>` shrinks a figure's sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct ScaleSpec {
    /// Human-readable statement of the shrink, printed and written into `summary.json`.
    pub description: String,
    /// Keys set on top of the sweep's `[fixed]` (replacing equal keys).
    pub fixed: Vec<(String, Value)>,
    /// Replacement seed list.
    pub seeds: Option<Vec<u64>>,
    /// Replacement value lists for some of the sweep's parameters.
    pub parameters: Vec<(String, Vec<Value>)>,
}

/// The `[reproduce]` table: how a sweep becomes a paper-style figure.
#[derive(Debug, Clone, PartialEq)]
pub struct Reproduce {
    /// Figure title.
    pub title: String,
    /// One panel per metric key (e.g. `val_ACC/ood_analogical`).
    pub metrics: Vec<String>,
    /// The metric whose mean over seeds gives the onset estimate.
    pub onset_metric: String,
    /// Threshold of the onset estimate (first step where the mean reaches it).
    pub onset_threshold: f64,
    /// The swept key that forms the curves (a key of `[parameters]`); none: one curve.
    pub group_by: Option<String>,
    /// Legend prefix, e.g. `batch` gives `batch = 64`; for a single curve, its whole label.
    pub label: String,
    /// What the paper reports, in words.
    pub paper: String,
    /// The paper's onsets, drawn as markers.
    pub markers: Vec<PaperMarker>,
    /// Also draw the entity-embedding PCA (Fig. 7) of the first run with snapshots into
    /// `figure-pca.{png,svg}`.
    pub pca: bool,
    /// Named shrinks (`small`, …); `full` is always the file as written.
    pub scales: Vec<(String, ScaleSpec)>,
}

/// A parsed and validated sweep file.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepSpec {
    /// The file it was read from (names it in errors).
    pub file: PathBuf,
    /// The sweep's name (directory of its runs); filesystem-safe.
    pub name: String,
    /// One line of description.
    pub description: String,
    /// The base configuration, resolved; none: the built-in defaults.
    pub base: Option<PathBuf>,
    /// Grid or random.
    pub method: Method,
    /// Keys applied to every experiment, in file order.
    pub fixed: Vec<(String, Value)>,
    /// Swept keys and their values, in file order (first slowest).
    pub parameters: Vec<(String, Vec<Value>)>,
    /// Training seeds (innermost loop); empty: the base's seed, not part of names.
    pub seeds: Vec<u64>,
    /// Figure metadata, for `reproduce`.
    pub reproduce: Option<Reproduce>,
    /// The scale this spec was shrunk to (`full` when as written).
    pub scale: String,
    /// The command-line overrides applied ([`SweepSpec::with_overrides`]: `key=value`, then
    /// `seeds=…`); empty as written.
    pub overrides: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSweep {
    name: String,
    #[serde(default)]
    description: String,
    base: Option<String>,
    #[serde(default)]
    method: Option<String>,
    count: Option<usize>,
    seed: Option<u64>,
    #[serde(default)]
    seeds: Vec<u64>,
    #[serde(default)]
    fixed: toml::Table,
    #[serde(default)]
    parameters: toml::Table,
    reproduce: Option<RawReproduce>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReproduce {
    title: String,
    metrics: Vec<String>,
    onset_metric: Option<String>,
    onset_threshold: Option<f64>,
    group_by: Option<String>,
    label: String,
    #[serde(default)]
    paper: String,
    #[serde(default)]
    markers: Vec<PaperMarker>,
    #[serde(default)]
    pca: bool,
    #[serde(default)]
    scale: toml::Table,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScale {
    description: String,
    #[serde(default)]
    fixed: toml::Table,
    seeds: Option<Vec<u64>>,
    #[serde(default)]
    parameters: toml::Table,
}

/// Keys the sweep sets itself for every experiment.
const RESERVED: [&str; 2] = ["data_dir", "save_dir"];

/// The qualified name (`table.key`) of a sweep key, or `None` when it is no configuration key.
///
/// A bare `seed` is the training seed and `data_seed` the generator seed (the flat W&B names);
/// other bare keys are unique across the tables.
pub fn qualify(key: &str) -> Option<String> {
    RunConfig::qualify(key)
}

/// The text form of a value as `RunConfig::set` and the `train` flags read it: strings bare
/// (quoted only when the bare text would read as another TOML type), everything else as TOML.
pub fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => {
            let reads_as_other = toml::from_str::<toml::Table>(&format!("v = {s}"))
                .ok()
                .and_then(|t| t.get("v").map(|v| !v.is_str()))
                .unwrap_or(false);
            if reads_as_other || s.is_empty() {
                Value::String(s.clone()).to_string()
            } else {
                s.clone()
            }
        }
        other => other.to_string(),
    }
}

impl SweepSpec {
    /// Reads and validates a sweep file: TOML, or the original's sweep YAML (`.yaml`/`.yml`).
    ///
    /// # Errors
    /// [`SweepError::Io`], [`SweepError::Parse`] (bad TOML or shape), [`SweepError::Key`] (a key
    /// that is unknown, reserved, given twice, or whose value the configuration rejects, naming
    /// the file and key), [`SweepError::Base`] (unreadable base config).
    pub fn load(file: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(file).map_err(io_err(file))?;
        if run_config::yaml::is_yaml(file) {
            // The original's sweep layout, converted (see `run_config::yaml::sweep_toml`).
            let name = file
                .file_stem()
                .map(|s| crate::experiment::safe_name(&s.to_string_lossy()))
                .unwrap_or_else(|| "sweep".into());
            let text =
                run_config::yaml::sweep_toml(&text, &name).map_err(|reason| SweepError::Parse {
                    file: file.to_path_buf(),
                    reason,
                })?;
            return Self::parse(&text, file);
        }
        Self::parse(&text, file)
    }

    /// Parses sweep-file text; `file` names it in errors and anchors a relative `base`.
    ///
    /// # Errors
    /// As [`SweepSpec::load`].
    pub fn parse(text: &str, file: &Path) -> Result<Self> {
        let parse_err = |reason: String| SweepError::Parse {
            file: file.to_path_buf(),
            reason,
        };
        let raw: RawSweep = toml::from_str(text).map_err(|e| parse_err(e.to_string()))?;
        let method = match raw.method.as_deref().unwrap_or("grid") {
            "grid" => {
                if raw.count.is_some() || raw.seed.is_some() {
                    return Err(parse_err(
                        "`count` and `seed` belong to method = \"random\"".into(),
                    ));
                }
                Method::Grid
            }
            "random" => Method::Random {
                count: raw
                    .count
                    .ok_or_else(|| parse_err("method = \"random\" needs `count`".into()))?,
                seed: raw
                    .seed
                    .ok_or_else(|| parse_err("method = \"random\" needs `seed`".into()))?,
            },
            other => {
                return Err(parse_err(format!(
                    "method must be \"grid\" or \"random\", found {other:?}"
                )));
            }
        };
        if raw.name.is_empty() || crate::experiment::safe_name(&raw.name) != raw.name {
            return Err(SweepError::Key {
                file: file.to_path_buf(),
                key: "name".into(),
                reason: format!(
                    "{:?} must be non-empty and use only letters, digits and . _ - = , +",
                    raw.name
                ),
            });
        }
        let base = raw.base.as_deref().map(|b| resolve_base(file, b));
        let reproduce = raw
            .reproduce
            .map(|r| convert_reproduce(r, file))
            .transpose()?;
        let spec = SweepSpec {
            file: file.to_path_buf(),
            name: raw.name,
            description: raw.description,
            base,
            method,
            fixed: flatten(raw.fixed),
            parameters: lists(raw.parameters, file, "parameters")?,
            seeds: raw.seeds,
            reproduce,
            scale: "full".into(),
            overrides: Vec::new(),
        };
        spec.validate()?;
        Ok(spec)
    }

    /// The sweep with command-line overrides: `sets` (`key=value`, as a flag would give them)
    /// replace or add `[fixed]` keys, and `seeds` replaces the seed list. An overridden sweep
    /// gets its own name (`<name>+<overrides>`), so its runs never land in, or replace, the
    /// runs of the sweep as written.
    ///
    /// # Errors
    /// [`SweepError::Key`] for a malformed or unknown key, or a key the sweep varies.
    pub fn with_overrides(&self, sets: &[String], seeds: Option<Vec<u64>>) -> Result<Self> {
        if sets.is_empty() && seeds.is_none() {
            return Ok(self.clone());
        }
        let key_err = |key: &str, reason: String| SweepError::Key {
            file: self.file.clone(),
            key: key.to_string(),
            reason,
        };
        let mut out = self.clone();
        let mut tag = Vec::new();
        for kv in sets {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| key_err(kv, "--set expects KEY=VALUE".into()))?;
            let q = qualify(k).ok_or_else(|| key_err(k, "not a configuration key".into()))?;
            if out
                .parameters
                .iter()
                .any(|(pk, _)| qualify(pk).as_deref() == Some(&q))
            {
                return Err(key_err(
                    k,
                    "the sweep varies this key; edit its [parameters]".into(),
                ));
            }
            let value = parse_flag_value(v);
            match out
                .fixed
                .iter_mut()
                .find(|(fk, _)| qualify(fk).as_deref() == Some(&q))
            {
                Some(slot) => slot.1 = value,
                None => out.fixed.push((k.to_string(), value)),
            }
            tag.push(format!("{k}={v}"));
        }
        if let Some(seeds) = seeds {
            tag.push(format!(
                "seeds={}",
                seeds
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join("-")
            ));
            out.seeds = seeds;
        }
        let suffix = crate::experiment::safe_name(&tag.join(","));
        out.overrides.extend(tag);
        out.name = format!(
            "{}+{}",
            self.name,
            suffix.chars().take(80).collect::<String>()
        );
        out.validate()?;
        Ok(out)
    }

    /// The spec shrunk to `scale` (see [`ScaleSpec`]); `full` returns it unchanged. The name gets
    /// the suffix `-<scale>` so shrunk runs never mix with full ones.
    ///
    /// # Errors
    /// [`SweepError::Scale`] for an unknown scale; [`SweepError::Key`] when the shrink names a
    /// parameter the sweep does not vary or sets a bad value.
    pub fn scaled(&self, scale: &str) -> Result<Self> {
        if scale == "full" {
            return Ok(self.clone());
        }
        let scales = self
            .reproduce
            .as_ref()
            .map(|r| &r.scales[..])
            .unwrap_or(&[]);
        let Some((_, s)) = scales.iter().find(|(n, _)| n == scale) else {
            let mut available: Vec<&str> = scales.iter().map(|(n, _)| n.as_str()).collect();
            available.push("full");
            return Err(SweepError::Scale {
                file: self.file.clone(),
                scale: scale.into(),
                available: available.join(", "),
            });
        };
        let mut out = self.clone();
        out.name = format!("{}-{scale}", self.name);
        out.scale = scale.into();
        for (k, v) in &s.fixed {
            match out
                .fixed
                .iter_mut()
                .find(|(fk, _)| qualify(fk) == qualify(k))
            {
                Some(slot) => *slot = (slot.0.clone(), v.clone()),
                None => out.fixed.push((k.clone(), v.clone())),
            }
        }
        for (k, vs) in &s.parameters {
            let Some(slot) = out.parameters.iter_mut().find(|(pk, _)| pk == k) else {
                return Err(SweepError::Key {
                    file: self.file.clone(),
                    key: format!("reproduce.scale.{scale}.parameters.{k}"),
                    reason: "the sweep does not vary this key".into(),
                });
            };
            slot.1 = vs.clone();
        }
        if let Some(seeds) = &s.seeds {
            out.seeds = seeds.clone();
        }
        out.validate()?;
        Ok(out)
    }

    /// The base configuration (built-in defaults when no `base` is given).
    ///
    /// # Errors
    /// [`SweepError::Base`] when the file cannot be read or parsed.
    pub fn base_config(&self) -> Result<RunConfig> {
        match &self.base {
            None => Ok(RunConfig::default()),
            Some(path) => RunConfig::from_file(path).map_err(|e| SweepError::Base {
                file: self.file.clone(),
                base: path.clone(),
                reason: e.to_string(),
            }),
        }
    }

    /// Checks every key and applies every value to the base configuration, so that a typo or a
    /// wrongly typed value fails here, naming the file and key, before anything runs.
    fn validate(&self) -> Result<()> {
        let key_err = |key: &str, reason: String| SweepError::Key {
            file: self.file.clone(),
            key: key.to_string(),
            reason,
        };
        let base = self.base_config()?;
        let mut seen: Vec<(String, &str)> = Vec::new();
        let fixed = self.fixed.iter().map(|(k, v)| (k, std::slice::from_ref(v)));
        let swept = self.parameters.iter().map(|(k, vs)| (k, &vs[..]));
        for (key, values) in fixed.chain(swept) {
            let q = qualify(key).ok_or_else(|| key_err(key, "not a configuration key".into()))?;
            let bare = q.split_once('.').map(|(_, k)| k).unwrap_or(&q);
            if RESERVED.contains(&bare) {
                return Err(key_err(
                    key,
                    "reserved: the sweep sets each experiment's data and run directories".into(),
                ));
            }
            if !self.seeds.is_empty() && q == "train.seed" {
                return Err(key_err(
                    key,
                    "the training seed is given by `seeds`; set it in one place".into(),
                ));
            }
            if let Some((other, _)) = seen.iter().find(|(s, _)| *s == q) {
                return Err(key_err(key, format!("set twice (also as `{other}`)")));
            }
            seen.push((q.clone(), key));
            if values.is_empty() {
                return Err(key_err(key, "needs at least one value".into()));
            }
            for v in values {
                let mut cfg = base.clone();
                cfg.set(&q, &value_text(v), key)
                    .map_err(|e| key_err(key, e.to_string()))?;
            }
        }
        if let Some(r) = &self.reproduce {
            if let Some(g) = &r.group_by
                && !self.parameters.iter().any(|(k, _)| k == g)
            {
                return Err(key_err(
                    "reproduce.group_by",
                    format!("`{g}` is not a key of [parameters]"),
                ));
            }
            if r.metrics.is_empty() {
                return Err(key_err("reproduce.metrics", "needs at least one".into()));
            }
        }
        Ok(())
    }
}

/// `base` relative to the sweep file's directory when it exists there, else as given (relative
/// to the working directory, normally the repository root).
fn resolve_base(file: &Path, base: &str) -> PathBuf {
    let given = PathBuf::from(base);
    if given.is_absolute() {
        return given;
    }
    let beside = file.parent().unwrap_or(Path::new("")).join(&given);
    if beside.is_file() { beside } else { given }
}

/// `table` with TOML dotted keys (`train.lr = …`, which TOML reads as a sub-table) turned back
/// into the qualified key `train.lr`, in file order.
fn flatten(table: toml::Table) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (k, v) in table {
        match v {
            Value::Table(sub) if ["data", "model", "train", "wandb"].contains(&k.as_str()) => {
                out.extend(sub.into_iter().map(|(sk, sv)| (format!("{k}.{sk}"), sv)));
            }
            other => out.push((k, other)),
        }
    }
    out
}

fn lists(table: toml::Table, file: &Path, section: &str) -> Result<Vec<(String, Vec<Value>)>> {
    flatten(table)
        .into_iter()
        .map(|(k, v)| match v {
            Value::Array(vs) => Ok((k, vs)),
            other => Err(SweepError::Key {
                file: file.to_path_buf(),
                key: format!("{section}.{k}"),
                reason: format!("expected a list of values, found {}", other.type_str()),
            }),
        })
        .collect()
}

fn convert_reproduce(r: RawReproduce, file: &Path) -> Result<Reproduce> {
    let mut scales = Vec::new();
    for (name, v) in r.scale {
        let s: RawScale = v
            .try_into()
            .map_err(|e: toml::de::Error| SweepError::Parse {
                file: file.to_path_buf(),
                reason: format!("[reproduce.scale.{name}]: {}", e.message()),
            })?;
        if name == "full" {
            return Err(SweepError::Key {
                file: file.to_path_buf(),
                key: "reproduce.scale.full".into(),
                reason: "`full` is the file as written and cannot be redefined".into(),
            });
        }
        let parameters = lists(
            s.parameters,
            file,
            &format!("reproduce.scale.{name}.parameters"),
        )?;
        scales.push((
            name,
            ScaleSpec {
                description: s.description,
                fixed: flatten(s.fixed),
                seeds: s.seeds,
                parameters,
            },
        ));
    }
    let onset_metric = r
        .onset_metric
        .or_else(|| r.metrics.first().cloned())
        .unwrap_or_default();
    Ok(Reproduce {
        title: r.title,
        metrics: r.metrics,
        onset_metric,
        onset_threshold: r.onset_threshold.unwrap_or(0.5),
        group_by: r.group_by,
        label: r.label,
        paper: r.paper,
        markers: r.markers,
        pca: r.pca,
        scales,
    })
}

/// A flag's text as a TOML value (`1e-3`, `true`, `[1, 2]`), or a string when it is not one.
fn parse_flag_value(text: &str) -> Value {
    toml::from_str::<toml::Table>(&format!("v = {text}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_fixed_keys_and_seeds_under_a_name_of_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s.toml");
        std::fs::write(
            &file,
            "name = \"s\"\nseeds = [1, 2]\n[fixed]\nepochs = 5\n[parameters]\nlr = [1e-3, 1e-4]\n",
        )
        .unwrap();
        let spec = SweepSpec::load(&file).unwrap();
        let o = spec
            .with_overrides(&["epochs=9".into(), "d_model=64".into()], Some(vec![7]))
            .unwrap();
        assert_eq!(o.seeds, vec![7]);
        assert!(o.fixed.contains(&("epochs".into(), Value::Integer(9))));
        assert!(o.fixed.contains(&("d_model".into(), Value::Integer(64))));
        assert_ne!(o.name, spec.name);
        assert!(o.name.starts_with("s+"), "{}", o.name);
        assert_eq!(o.overrides, ["epochs=9", "d_model=64", "seeds=7"]);
        assert!(spec.overrides.is_empty());
        for bad in ["lr=1", "nope=1", "epochs"] {
            assert!(spec.with_overrides(&[bad.into()], None).is_err(), "{bad}");
        }
        assert_eq!(spec.with_overrides(&[], None).unwrap(), spec);
    }

    #[test]
    fn qualify_maps_flat_keys_and_the_two_seeds() {
        assert_eq!(qualify("lr").as_deref(), Some("train.lr"));
        assert_eq!(
            qualify("num_entities").as_deref(),
            Some("data.num_entities")
        );
        assert_eq!(qualify("d_model").as_deref(), Some("model.d_model"));
        assert_eq!(qualify("seed").as_deref(), Some("train.seed"));
        assert_eq!(qualify("data_seed").as_deref(), Some("data.seed"));
        assert_eq!(qualify("data.seed").as_deref(), Some("data.seed"));
        assert_eq!(qualify("learning_rate"), None);
        assert_eq!(qualify("model.lr"), None);
    }

    #[test]
    fn value_text_round_trips_through_the_config() {
        assert_eq!(value_text(&Value::Integer(20)), "20");
        assert_eq!(value_text(&Value::Float(0.001)), "0.001");
        assert_eq!(value_text(&Value::String("adamw".into())), "adamw");
        // A string that would read as a number keeps its quotes.
        assert_eq!(value_text(&Value::String("10".into())), "\"10\"");
        assert_eq!(value_text(&Value::Boolean(true)), "true");
        let mut cfg = RunConfig::default();
        cfg.set("train.lr", &value_text(&Value::Float(1e-3)), "t")
            .unwrap();
        assert_eq!(cfg.train.lr, 1e-3);
        cfg.set(
            "train.pca_steps",
            &value_text(&Value::Array(vec![Value::Integer(3), Value::Integer(9)])),
            "t",
        )
        .unwrap();
        assert_eq!(cfg.train.pca_steps, vec![3, 9]);
    }
}
