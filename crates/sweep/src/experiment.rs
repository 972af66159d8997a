//! Expanding a sweep into experiments: combinations, names, directories, the `train` command.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use kg_data::{DataConfig, Sampler};
use run_config::RunConfig;
use toml::Value;

use crate::cache;
use crate::error::{Result, SweepError};
use crate::spec::{Method, SweepSpec, qualify, value_text};

/// Where a sweep's runs and datasets go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Run directories are `<out_root>/<sweep name>/<experiment name>`.
    pub out_root: PathBuf,
    /// Datasets are `<cache_root>/<readable>-<hash>` (see [`cache::data_key`]).
    pub cache_root: PathBuf,
}

impl Default for Layout {
    fn default() -> Self {
        Self {
            out_root: PathBuf::from("runs/sweeps"),
            cache_root: PathBuf::from("data/cache"),
        }
    }
}

/// One run of a sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct Experiment {
    /// Position in the sweep (the Slurm array index).
    pub index: usize,
    /// Readable, filesystem-safe, unique within the sweep: `batch_size=64,seed=1`.
    pub name: String,
    /// The swept values of this experiment (parameters, then `seed`), as written in the file.
    pub assignments: Vec<(String, Value)>,
    /// The resolved configuration: base, `[fixed]`, assignments, then the directories.
    pub config: RunConfig,
    /// `config.train.save_dir`.
    pub run_dir: PathBuf,
    /// `config.train.data_dir`, the cached dataset of `config.data`.
    pub data_dir: PathBuf,
    /// Why this combination is not a valid run (it is reported and skipped), if it is not.
    pub invalid: Option<String>,
}

impl Experiment {
    /// The value of a swept key in its text form (as in the name), if this experiment sets it.
    pub fn value_of(&self, key: &str) -> Option<String> {
        self.assignments
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| value_text(v))
    }
}

/// A sweep expanded against a [`Layout`].
#[derive(Debug, Clone)]
pub struct Sweep {
    /// The sweep file's content.
    pub spec: SweepSpec,
    /// Where runs and datasets go.
    pub layout: Layout,
    /// The experiments, in order.
    pub experiments: Vec<Experiment>,
}

impl Sweep {
    /// Expands `spec`: combinations (grid or random) × seeds, each applied to the base config.
    ///
    /// A combination the configuration's own validation rejects (for example `n_head` not
    /// dividing `d_model`) becomes an experiment with [`Experiment::invalid`] set: it is reported
    /// and the rest of the sweep runs.
    ///
    /// # Errors
    /// [`SweepError::Base`] when the base config cannot be read; [`SweepError::Key`] when a value
    /// cannot be applied.
    pub fn new(spec: SweepSpec, layout: Layout) -> Result<Self> {
        let base = spec.base_config()?;
        let mut fixed_cfg = base;
        for (k, v) in &spec.fixed {
            apply(&mut fixed_cfg, &spec.file, k, v)?;
        }
        let sweep_dir = layout.out_root.join(&spec.name);
        let mut experiments = Vec::new();
        let mut names = BTreeSet::new();
        for combo in combinations(&spec) {
            let seeds: Vec<Option<u64>> = if spec.seeds.is_empty() {
                vec![None]
            } else {
                spec.seeds.iter().copied().map(Some).collect()
            };
            for seed in seeds {
                let mut assignments = combo.clone();
                if let Some(s) = seed {
                    assignments.push(("seed".into(), Value::Integer(s as i64)));
                }
                let mut cfg = fixed_cfg.clone();
                for (k, v) in &assignments {
                    apply(&mut cfg, &spec.file, k, v)?;
                }
                let name = unique_name(&assignments, &mut names);
                let run_dir = sweep_dir.join(&name);
                let data_dir = layout.cache_root.join(cache::data_key(&cfg.data));
                cfg.train.save_dir = run_dir.clone();
                cfg.train.data_dir = data_dir.clone();
                if cfg.wandb.run_name.is_none() {
                    cfg.wandb.run_name = Some(format!("{}/{name}", spec.name));
                }
                let invalid = cfg.validate().err().map(|e| e.to_string());
                experiments.push(Experiment {
                    index: experiments.len(),
                    name,
                    assignments,
                    config: cfg,
                    run_dir,
                    data_dir,
                    invalid,
                });
            }
        }
        Ok(Self {
            spec,
            layout,
            experiments,
        })
    }

    /// `<out_root>/<sweep name>`: the run directories, the status log and figures.
    pub fn dir(&self) -> PathBuf {
        self.layout.out_root.join(&self.spec.name)
    }

    /// The experiment at `index`.
    ///
    /// # Errors
    /// [`SweepError::Index`] when out of range.
    pub fn get(&self, index: usize) -> Result<&Experiment> {
        self.experiments.get(index).ok_or(SweepError::Index {
            file: self.spec.file.clone(),
            index,
            count: self.experiments.len(),
        })
    }

    /// The arguments of the `train` command of `e` (without the program), with `threads`
    /// libtorch threads: the base config, then every fixed and swept key as `--set table.key=v`
    /// (qualified, so `seed` can never be mistaken for the generator's), then the directories,
    /// the W&B run name and the thread count, also as `--set` (the one form every `train` flag
    /// spelling agrees on).
    pub fn train_args(&self, e: &Experiment, threads: usize) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(base) = &self.spec.base {
            args.push("--config".into());
            args.push(base.display().to_string());
        }
        for (k, v) in self.spec.fixed.iter().chain(&e.assignments) {
            // Keys were checked when the spec was read; an unknown one cannot reach here.
            let q = qualify(k).unwrap_or_else(|| k.clone());
            args.push("--set".into());
            args.push(format!("{q}={}", value_text(v)));
        }
        let mut set = |kv: String| {
            args.push("--set".into());
            args.push(kv);
        };
        set(format!("train.data_dir={}", e.data_dir.display()));
        set(format!("train.save_dir={}", e.run_dir.display()));
        if let Some(name) = &e.config.wandb.run_name {
            set(format!("wandb.run_name={name}"));
        }
        set(format!("train.threads={threads}"));
        args.push("--quiet".into());
        args
    }

    /// The distinct data configurations of the valid experiments with their cache directories,
    /// in first-use order.
    pub fn datasets(&self) -> Vec<(PathBuf, DataConfig)> {
        let mut out: Vec<(PathBuf, DataConfig)> = Vec::new();
        for e in self.experiments.iter().filter(|e| e.invalid.is_none()) {
            if !out.iter().any(|(d, _)| *d == e.data_dir) {
                out.push((e.data_dir.clone(), e.config.data.clone()));
            }
        }
        out
    }
}

fn apply(cfg: &mut RunConfig, file: &Path, key: &str, v: &Value) -> Result<()> {
    let err = |reason: String| SweepError::Key {
        file: file.to_path_buf(),
        key: key.to_string(),
        reason,
    };
    let q = qualify(key).ok_or_else(|| err("not a configuration key".into()))?;
    cfg.set(&q, &value_text(v), key)
        .map_err(|e| err(e.to_string()))
}

/// The parameter combinations of `spec`, each as `(key, value)` in parameter order.
pub fn combinations(spec: &SweepSpec) -> Vec<Vec<(String, Value)>> {
    let sizes: Vec<usize> = spec.parameters.iter().map(|(_, vs)| vs.len()).collect();
    let total = sizes
        .iter()
        .try_fold(1usize, |acc, n| acc.checked_mul(*n))
        .unwrap_or(usize::MAX);
    let indices: Vec<usize> = match spec.method {
        Method::Grid => (0..total).collect(),
        Method::Random { count, seed } => sample_distinct(total, count, seed),
    };
    indices
        .into_iter()
        .map(|i| decode(i, &sizes))
        .map(|digits| {
            spec.parameters
                .iter()
                .zip(digits)
                .map(|((k, vs), d)| (k.clone(), vs[d].clone()))
                .collect()
        })
        .collect()
}

/// Mixed-radix digits of `index`, last parameter fastest (so grid order is nested loops).
fn decode(mut index: usize, sizes: &[usize]) -> Vec<usize> {
    let mut digits = vec![0; sizes.len()];
    for (slot, n) in digits.iter_mut().zip(sizes).rev() {
        *slot = index % n;
        index /= n;
    }
    digits
}

/// `count` distinct indices of `0..total` drawn with the seeded generator (Floyd's algorithm,
/// so a huge grid costs nothing), returned sorted; all of them when `count >= total`.
fn sample_distinct(total: usize, count: usize, seed: u64) -> Vec<usize> {
    if count >= total {
        return (0..total).collect();
    }
    let mut rng = Sampler::new(seed);
    let mut chosen = BTreeSet::new();
    for j in (total - count)..total {
        let t = rng.index(j + 1);
        if !chosen.insert(t) {
            chosen.insert(j);
        }
    }
    chosen.into_iter().collect()
}

/// `text` with every character outside `[A-Za-z0-9._=,+-]` replaced by `_`, so it is one safe
/// path component on every filesystem; never empty, `.` or `..`.
pub fn safe_name(text: &str) -> String {
    let s: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._=,+-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    match s.as_str() {
        "" | "." | ".." => format!("_{s}"),
        _ => s,
    }
}

/// `key=value,key=value` made safe, with `-<n>` appended when sanitising made it collide with an
/// earlier name (e.g. the values `a/b` and `a_b`).
fn unique_name(assignments: &[(String, Value)], taken: &mut BTreeSet<String>) -> String {
    let text = if assignments.is_empty() {
        "base".to_string()
    } else {
        assignments
            .iter()
            .map(|(k, v)| format!("{k}={}", value_text(v)))
            .collect::<Vec<_>>()
            .join(",")
    };
    let base = safe_name(&text);
    let mut name = base.clone();
    let mut n = 2;
    while taken.contains(&name) {
        name = format!("{base}-{n}");
        n += 1;
    }
    taken.insert(name.clone());
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_is_nested_loops_last_fastest() {
        let sizes = [2, 3];
        let all: Vec<Vec<usize>> = (0..6).map(|i| decode(i, &sizes)).collect();
        assert_eq!(
            all,
            vec![
                vec![0, 0],
                vec![0, 1],
                vec![0, 2],
                vec![1, 0],
                vec![1, 1],
                vec![1, 2]
            ]
        );
    }

    #[test]
    fn floyd_sampling_is_distinct_in_range_and_seeded() {
        for seed in 0..20 {
            let s = sample_distinct(50, 7, seed);
            assert_eq!(s.len(), 7);
            assert!(s.windows(2).all(|w| w[0] < w[1]), "sorted and distinct");
            assert!(s.iter().all(|&i| i < 50));
            assert_eq!(s, sample_distinct(50, 7, seed));
        }
        assert_ne!(sample_distinct(50, 7, 1), sample_distinct(50, 7, 2));
        assert_eq!(sample_distinct(4, 9, 3), vec![0, 1, 2, 3]);
    }

    #[test]
    fn safe_names() {
        assert_eq!(safe_name("lr=0.001,seed=1"), "lr=0.001,seed=1");
        assert_eq!(safe_name("device=a/b c"), "device=a_b_c");
        assert_eq!(safe_name(".."), "_..");
        assert_eq!(safe_name(""), "_");
        let mut taken = BTreeSet::new();
        let a = unique_name(&[("k".into(), Value::String("a/b".into()))], &mut taken);
        let b = unique_name(&[("k".into(), Value::String("a_b".into()))], &mut taken);
        assert_eq!(a, "k=a_b");
        assert_eq!(b, "k=a_b-2");
    }
}
