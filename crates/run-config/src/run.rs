//! The run configuration: one typed tree, read from TOML, overridden by flat `key=value` pairs,
//! validated before any tensor exists.
//!
//! Files have four tables, `[data]` (generation, see [`kg_data::DataConfig`]), `[model]`
//! ([`ModelConfig`]), `[train]` ([`TrainConfig`]) and `[wandb]` ([`WandbConfig`]). Every key is
//! also addressable flat (`lr`, `d_model`, `num_entities`, …), as the original's config and
//! command-line flags are; keys are unique across tables, which [`RunConfig::set`] relies on.

use std::path::{Path, PathBuf};

use kg_data::DataConfig;
use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// The most libtorch threads a run may ask for: far above any machine's cores, far below what
/// exhausts the process (each thread has its own stack).
pub const MAX_THREADS: usize = 1024;
use crate::fields::TABLES;

/// Model hyper-parameters of a run: the model's own configuration, read from `[model]` (its
/// vocabulary size is not a config key: [`crate::GptConfig::with_vocab`] sets it from the
/// dataset).
pub use crate::model::GptConfig as ModelConfig;

/// Which optimiser updates the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// `torch.optim.Adam`: weight decay coupled as an L2 term added to the gradient.
    Adam,
    /// `torch.optim.AdamW`: decoupled weight decay.
    Adamw,
}

/// Where tensors live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// CUDA when available, else CPU.
    Auto,
    /// CPU.
    Cpu,
    /// The first CUDA device (an error when there is none).
    Cuda,
}

/// When geometry metrics are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GeometrySchedule {
    /// Never.
    Off,
    /// At every printed evaluation (every `eval_every` epochs).
    Eval,
    /// On roughly log-spaced global steps (about 12 per decade).
    Log,
}

/// The random stream of a training run: what initialises the weights and orders the batches.
///
/// Written `"ours"` or `"torch"` (the `rng` key of `[train]`, `train --rng`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrainRng {
    /// Our own streams (the default): `Gpt::new` under `manual_seed(seed)`, each epoch's order
    /// from a ChaCha20 shuffle and its dropout from a generator seeded per epoch, so that every
    /// member of a batched ensemble and every resumed epoch draws its own.
    #[default]
    Ours,
    /// The original's draws from libtorch's default CPU generator, and its arithmetic:
    /// `manual_seed(seed)`, the parameters created and initialised in the original's module
    /// order, per epoch the draws of PyTorch's `DataLoader` (a seed for the shuffled loader's
    /// iterator and one for its `RandomSampler`, whose `randperm` orders the rows, then one for
    /// the evaluation loader's iterator), dropout masks drawn in the original's forward pass,
    /// and PyTorch's single-tensor Adam. Single runs only; an untied head.
    Torch,
}

impl TrainRng {
    /// The accepted spellings, as written in configs and on the command line.
    pub const NAMES: [&'static str; 2] = ["ours", "torch"];

    /// The spelling of this stream (`"ours"` or `"torch"`).
    pub fn as_str(self) -> &'static str {
        match self {
            TrainRng::Ours => "ours",
            TrainRng::Torch => "torch",
        }
    }

    /// True for the default, [`TrainRng::Ours`] (which serialised configurations leave
    /// implicit, so that the records of runs on our stream are unchanged).
    pub fn is_ours(&self) -> bool {
        *self == TrainRng::Ours
    }
}

/// Training hyper-parameters and paths.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Dataset directory; generated from `[data]` when it holds no dataset.
    pub data_dir: PathBuf,
    /// Run directory (config, metrics, checkpoints, plots). Empty (the default): a fresh
    /// `runs/<config name>-<UTC date>-<time>`.
    pub save_dir: PathBuf,
    /// Rows per optimiser step. Default 64.
    pub batch_size: usize,
    /// Passes over the training set. Default 1000.
    pub epochs: usize,
    /// Peak learning rate. Default 1e-4.
    pub lr: f64,
    /// Weight decay (coupled L2 for Adam, decoupled for AdamW). Default 0.
    pub weight_decay: f64,
    /// Linear warm-up length in optimiser steps. Default 0.
    pub warmup_steps: usize,
    /// Adam or AdamW. Default adam.
    pub optimizer: OptimizerKind,
    /// Mixed precision on CUDA (a no-op on CPU). Default true.
    pub use_amp: bool,
    /// Seed of initialisation, shuffles and dropout. Default 42.
    pub seed: u64,
    /// Random stream (and arithmetic) of initialisation, shuffles and dropout: ours (default) or
    /// the original's (`torch`). Left out when serialised at its default.
    #[serde(skip_serializing_if = "TrainRng::is_ours")]
    pub rng: TrainRng,
    /// Log training metrics every this many batches (and on each epoch's first). Default 50.
    pub log_every: usize,
    /// Print the evaluation table every this many epochs. Default 10.
    pub eval_every: usize,
    /// Keep a checkpoint `epochNNN` every this many epochs, and `best` on improvement; 0 =
    /// neither (`last` is written regardless). Default 0.
    pub save_every: usize,
    /// Refresh the resumable `last` checkpoint at the end of every this many epochs. Default 1.
    pub checkpoint_every: usize,
    /// ... but not sooner than this many seconds after the previous one (0 = every
    /// `checkpoint_every` epochs exactly); a kill loses at most this long plus one epoch.
    /// Default 10.
    pub checkpoint_seconds: f64,
    /// cpu, cuda or auto. Default auto.
    pub device: DeviceChoice,
    /// libtorch intra-op threads; 0 = libtorch's default. Default 0.
    pub threads: usize,
    /// When to compute the geometry metrics. Default log (about twelve times per decade of
    /// steps, so the energy is seen falling before the accuracy jumps; 3.5 ms each).
    pub geometry: GeometrySchedule,
    /// Global steps at which the PCA of entity embeddings is recorded (the end of training
    /// always is). Default empty.
    pub pca_steps: Vec<u64>,
    /// Draw the run's plots into `save_dir/plots` at the end. Default true.
    pub plots: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data/composition_functor.10.10000.5"),
            save_dir: PathBuf::new(),
            batch_size: 64,
            epochs: 1000,
            lr: 1e-4,
            weight_decay: 0.0,
            warmup_steps: 0,
            optimizer: OptimizerKind::Adam,
            use_amp: true,
            seed: 42,
            rng: TrainRng::Ours,
            log_every: 50,
            eval_every: 10,
            save_every: 0,
            checkpoint_every: 1,
            checkpoint_seconds: 10.0,
            device: DeviceChoice::Auto,
            threads: 0,
            geometry: GeometrySchedule::Log,
            pca_steps: Vec::new(),
            plots: true,
        }
    }
}

/// Weights & Biases settings of the run (environment variables override them, see the
/// `wandb-http` crate).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WandbConfig {
    /// Stream to W&B when `WANDB_API_KEY` is set. Default true.
    pub use_wandb: bool,
    /// W&B project. Default "emergent_analogy".
    pub project: String,
    /// Display name; none → `run_<unix time>`.
    pub run_name: Option<String>,
}

impl Default for WandbConfig {
    fn default() -> Self {
        Self {
            use_wandb: true,
            project: "emergent_analogy".into(),
            run_name: None,
        }
    }
}

/// The whole configuration of one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// Dataset generation parameters (used when `train.data_dir` holds no dataset).
    pub data: DataConfig,
    /// Model hyper-parameters.
    pub model: ModelConfig,
    /// Training hyper-parameters.
    pub train: TrainConfig,
    /// W&B settings.
    pub wandb: WandbConfig,
}

impl RunConfig {
    /// Reads a TOML file, or the original's YAML layout when the name ends in `.yaml`/`.yml`
    /// (see [`crate::yaml`]); unknown tables or keys are errors naming the file and key.
    ///
    /// # Errors
    /// [`ConfigError::Io`] when it cannot be read, [`ConfigError::Config`] naming the file and
    /// the key at fault otherwise.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let parsed = if crate::yaml::is_yaml(path) {
            Self::from_yaml_str(&text)
        } else {
            Self::from_toml_str(&text)
        };
        parsed.map_err(|reason| ConfigError::Config {
            source_name: path.display().to_string(),
            reason,
        })
    }

    /// Parses the original's YAML config layout (see [`crate::yaml`]).
    ///
    /// # Errors
    /// The YAML error, or a message naming the key at fault.
    pub fn from_yaml_str(text: &str) -> Result<Self, String> {
        let tree = crate::yaml::run_config_toml(text)?;
        toml::Value::Table(tree)
            .try_into()
            .map_err(|e: toml::de::Error| e.to_string())
    }

    /// Parses TOML text; the error is the parser's message (which names the key).
    pub fn from_toml_str(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// The TOML text of the whole resolved configuration.
    pub fn to_toml_string(&self) -> String {
        // Serialising a tree of plain structs, strings and numbers cannot fail.
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// Sets one flat key (`lr`, `d_model`, `num_entities`, …) from its text form, as a flag or a
    /// sweep would: the text is read as a TOML value (`1e-3`, `true`, `[10, 100]`), or as a
    /// string when it is not one. `section.key` is accepted too.
    ///
    /// # Errors
    /// [`ConfigError::Config`] naming `origin` and the key when the key is unknown or the value
    /// has the wrong type or is out of range for it.
    pub fn set(&mut self, key: &str, text: &str, origin: &str) -> Result<(), ConfigError> {
        let err = |reason: String| ConfigError::Config {
            source_name: origin.to_string(),
            reason,
        };
        let mut tree = toml::Value::try_from(&*self).map_err(|e| err(e.to_string()))?;
        let qualified = Self::qualify(key).ok_or_else(|| err(format!("unknown key `{key}`")))?;
        let (table, name) = qualified.split_once('.').unwrap_or(("", key));
        let value = parse_value(text);
        let section = tree
            .get_mut(table)
            .and_then(|t| t.as_table_mut())
            .ok_or_else(|| err(format!("missing table [{table}]")))?;
        section.insert(name.to_string(), value);
        *self = tree
            .try_into()
            .map_err(|e: toml::de::Error| err(format!("`{name}` = {text:?}: {}", e.message())))?;
        Ok(())
    }

    /// Whether `key` (flat, or `table.key`) is a configuration key.
    pub fn is_key(key: &str) -> bool {
        Self::qualify(key).is_some()
    }

    /// The qualified name (`table.key`) of a flat or qualified key, or `None` when it is no
    /// configuration key (see [`crate::fields`]). `seed` is in `[data]` and `[train]`: the plain
    /// name is the training seed, as in the original's flags, and `data_seed` the generator's;
    /// likewise `rng` and `data_rng`.
    pub fn qualify(key: &str) -> Option<String> {
        crate::fields::find(key).map(|f| format!("{}.{}", f.table, f.name))
    }

    /// Checks every value, naming the key at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, reason: String| {
            Err(ConfigError::Config {
                source_name: "config".into(),
                reason: format!("`{key}` {reason}"),
            })
        };
        self.data.validate().map_err(|e| ConfigError::Config {
            source_name: "config [data]".into(),
            reason: e.to_string(),
        })?;
        let t = &self.train;
        if t.batch_size == 0 {
            return bad("batch_size", "must be at least 1".into());
        }
        if !(t.lr.is_finite() && t.lr > 0.0) {
            return bad("lr", format!("must be a positive number, got {}", t.lr));
        }
        if !(t.weight_decay.is_finite() && t.weight_decay >= 0.0) {
            return bad(
                "weight_decay",
                format!("must be ≥ 0, got {}", t.weight_decay),
            );
        }
        if t.log_every == 0 {
            return bad("log_every", "must be at least 1".into());
        }
        if t.eval_every == 0 {
            return bad("eval_every", "must be at least 1".into());
        }
        if t.checkpoint_every == 0 {
            return bad("checkpoint_every", "must be at least 1".into());
        }
        if !(t.checkpoint_seconds.is_finite() && t.checkpoint_seconds >= 0.0) {
            return bad(
                "checkpoint_seconds",
                format!("must be ≥ 0, got {}", t.checkpoint_seconds),
            );
        }
        if t.threads > MAX_THREADS {
            return bad(
                "threads",
                format!(
                    "must be at most {MAX_THREADS} (0 = libtorch's default), got {}",
                    t.threads
                ),
            );
        }
        if self.train.data_dir.as_os_str().is_empty() {
            return bad("data_dir", "must not be empty".into());
        }
        if t.rng == TrainRng::Torch && self.model.tie_weights {
            return bad(
                "rng",
                "= \"torch\" needs `tie_weights` = false: the original's model has an untied head"
                    .into(),
            );
        }
        // The vocabulary size is not known yet; any positive one checks the rest.
        self.model
            .with_vocab(1)
            .validate()
            .map_err(|e| ConfigError::Config {
                source_name: "config [model]".into(),
                reason: e.to_string(),
            })?;
        Ok(())
    }

    /// The flat key → value map sent as the W&B run config (the original's flat keys).
    pub fn flat(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut out = serde_json::Map::new();
        if let Ok(serde_json::Value::Object(tree)) = serde_json::to_value(self) {
            for table in TABLES {
                if let Some(serde_json::Value::Object(section)) = tree.get(table) {
                    for (k, v) in section {
                        let key = crate::fields::find(&format!("{table}.{k}"))
                            .map_or(k.as_str(), |f| f.flat);
                        out.insert(key.to_string(), v.clone());
                    }
                }
            }
        }
        out.insert(
            "sub_size".into(),
            serde_json::json!(self.data.resolved_sub_size()),
        );
        out
    }
}

/// Reads a flag's text as a TOML value, falling back to a string.
fn parse_value(text: &str) -> toml::Value {
    let wrapped = format!("v = {text}");
    match toml::from_str::<toml::Table>(&wrapped) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(text.to_string())),
        Err(_) => toml::Value::String(text.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_papers() {
        let c = RunConfig::default();
        assert_eq!(c.model.d_model, 128);
        assert_eq!(c.train.batch_size, 64);
        assert_eq!(c.train.epochs, 1000);
        assert_eq!(c.train.lr, 1e-4);
        assert_eq!(c.train.eval_every, 10);
        assert_eq!(c.wandb.project, "emergent_analogy");
        assert_eq!(c.model.rope_base, 100.0);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn toml_round_trip() {
        let mut c = RunConfig::default();
        c.train.lr = 3e-3;
        c.train.pca_steps = vec![10, 100];
        c.wandb.run_name = Some("x".into());
        c.data.num_entities = 20;
        let back = RunConfig::from_toml_str(&c.to_toml_string()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn flat_keys_are_set_in_their_table() {
        let mut c = RunConfig::default();
        c.set("lr", "1e-3", "--lr").unwrap();
        c.set("d_model", "64", "--d_model").unwrap();
        c.set("num_entities", "20", "--num_entities").unwrap();
        c.set("include_f_inverse", "true", "flag").unwrap();
        c.set("data_dir", "some/dir", "flag").unwrap();
        c.set("run_name", "abc", "flag").unwrap();
        c.set("sub_size", "4", "flag").unwrap();
        c.set("data.seed", "7", "flag").unwrap();
        c.set("seed", "3", "flag").unwrap();
        c.set("optimizer", "adamw", "flag").unwrap();
        assert_eq!(c.train.lr, 1e-3);
        assert_eq!(c.model.d_model, 64);
        assert_eq!(c.data.num_entities, 20);
        assert!(c.data.include_f_inverse);
        assert_eq!(c.train.data_dir, PathBuf::from("some/dir"));
        assert_eq!(c.wandb.run_name.as_deref(), Some("abc"));
        assert_eq!(c.data.sub_size, Some(4));
        assert_eq!(c.data.seed, 7);
        assert_eq!(c.train.seed, 3);
        c.set("data_seed", "9", "--data_seed").unwrap();
        assert_eq!((c.data.seed, c.train.seed), (9, 3));
        assert_eq!(c.train.optimizer, OptimizerKind::Adamw);
    }

    #[test]
    fn bad_keys_and_values_name_the_key() {
        let mut c = RunConfig::default();
        let e = c
            .set("learning_rate", "1", "--learning_rate")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("learning_rate") && e.contains("--learning_rate"),
            "{e}"
        );
        let e = c
            .set("batch_size", "many", "--batch_size")
            .unwrap_err()
            .to_string();
        assert!(e.contains("batch_size"), "{e}");
        let e = c.set("device", "tpu", "--device").unwrap_err().to_string();
        assert!(e.contains("device"), "{e}");
        assert_eq!(
            c,
            RunConfig::default(),
            "a failed set leaves the config unchanged"
        );
        let e = RunConfig::from_toml_str("[train]\nlearning_rate = 1\n").unwrap_err();
        assert!(e.contains("learning_rate"), "{e}");
        c.train.lr = -1.0;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("`lr`"), "{e}");
        let mut c = RunConfig::default();
        c.model.n_head = 3;
        assert!(c.validate().unwrap_err().to_string().contains("n_head"));
    }

    #[test]
    fn the_originals_stream_is_a_key_and_refuses_what_it_cannot_reproduce() {
        let mut c = RunConfig::default();
        assert!(!c.to_toml_string().contains("rng"), "ours stays implicit");
        c.set("rng", "torch", "--rng").unwrap();
        assert_eq!(c.train.rng, TrainRng::Torch);
        assert!(c.to_toml_string().contains("rng = \"torch\""));
        assert_eq!(RunConfig::from_toml_str(&c.to_toml_string()).unwrap(), c);
        assert!(c.validate().is_ok());
        let e = c.set("rng", "numpy", "--rng").unwrap_err().to_string();
        assert!(e.contains("rng") && e.contains("--rng"), "{e}");
        c.model.dropout = 0.1;
        assert!(c.validate().is_ok(), "the original's dropout is reproduced");
        c.model.tie_weights = true;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("`rng`") && e.contains("`tie_weights`"), "{e}");
        c.train.rng = TrainRng::Ours;
        assert!(c.validate().is_ok(), "our stream ties weights");
    }

    #[test]
    fn flat_map_has_the_original_keys() {
        let flat = RunConfig::default().flat();
        for key in [
            "lr",
            "batch_size",
            "d_model",
            "n_layer",
            "num_entities",
            "num_relations",
            "epochs",
            "seed",
            "data_seed",
            "sub_size",
        ] {
            assert!(flat.contains_key(key), "{key} missing");
        }
        assert_eq!(flat["sub_size"], serde_json::json!(5));
    }
}
