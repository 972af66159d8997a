//! Every configuration key, defined once: its table, its flat name (the name of its flag and of
//! its W&B config entry), how its value is written, whether ensemble members may differ in it,
//! and a one-line description. [`crate::RunConfig::qualify`], the flat W&B config, the ensemble
//! rule ([`crate::batching`]) and `train`'s flags and help all read this table; a test ties it
//! to the configuration structs, so a key cannot be added to one and forgotten in the other.

/// How a value is written after its flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// `true` or `false`; a bare flag means `true`.
    Bool,
    /// A number.
    Number,
    /// A word or a path.
    Text,
    /// A TOML list, e.g. `[1, 30, 100]`.
    List,
}

/// One configuration key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// Its table: `data`, `model`, `train` or `wandb`.
    pub table: &'static str,
    /// Its name within the table.
    pub name: &'static str,
    /// Its flat name: the flag (`--<flat>`) and the W&B config key. Equal to `name` except for
    /// the generator's `seed` and `rng` (`data_seed`, `data_rng`), whose plain names are the
    /// training run's (`seed`, `rng`).
    pub flat: &'static str,
    /// How its value is written.
    pub kind: ValueKind,
    /// Whether the members of one batched ensemble may differ in it (it acts per member:
    /// optimiser, seed, logging, checkpoints, analysis, run directory, W&B identity).
    pub per_member: bool,
    /// What it means (unit, default).
    pub doc: &'static str,
}

const fn field(
    table: &'static str,
    name: &'static str,
    flat: &'static str,
    kind: ValueKind,
    per_member: bool,
    doc: &'static str,
) -> Field {
    Field {
        table,
        name,
        flat,
        kind,
        per_member,
        doc,
    }
}

use ValueKind::{Bool, List, Number, Text};

/// Every configuration key, table by table, in the order of `configs/default.toml`.
#[rustfmt::skip]
pub const FIELDS: &[Field] = &[
    field("data", "num_entities", "num_entities", Number, false, "entities <e_0> … <e_{N-1}> (default 10)"),
    field("data", "num_relations", "num_relations", Number, false, "relation tokens <r_0> … <r_{R-1}> (default 10000)"),
    field("data", "sub_size", "sub_size", Number, false, "size of E1 and of E2 (default num_entities / 2)"),
    field("data", "atomic_ood_ratio", "atomic_ood_ratio", Number, false, "share of atomic facts held out (default 0)"),
    field("data", "compositional_ood_ratio", "compositional_ood_ratio", Number, false, "probability that a 2-hop fact of seen hops is held out (default 0.1)"),
    field("data", "analogical_ood_ratio", "analogical_ood_ratio", Number, false, "share of functor facts held out (default 0.4)"),
    field("data", "include_f_inverse", "include_f_inverse", Bool, false, "also emit inverse functor facts with <f_inv> (default false)"),
    field("data", "duplicate_relation", "duplicate_relation", Bool, false, "allow a head to use one relation on two out-edges (default false)"),
    field("data", "seed", "data_seed", Number, false, "seed of the dataset generator (default 42)"),
    field("data", "rng", "data_rng", Text, false, "generator stream: chacha (ours, default) or numpy (the original's draws)"),
    field("model", "d_model", "d_model", Number, false, "model width (default 128)"),
    field("model", "n_layer", "n_layer", Number, false, "transformer blocks (default 1)"),
    field("model", "n_head", "n_head", Number, false, "attention heads; d_model / n_head must be even (default 1)"),
    field("model", "dropout", "dropout", Number, false, "dropout probability (default 0)"),
    field("model", "max_len", "max_len", Number, false, "longest input sequence (default 64)"),
    field("model", "rope_base", "rope_base", Number, false, "rotary embedding base (default 100)"),
    field("model", "tie_weights", "tie_weights", Bool, false, "tie the output head to the token embedding (default false)"),
    field("train", "data_dir", "data_dir", Text, false, "dataset directory; generated from [data] when absent or empty"),
    field("train", "save_dir", "save_dir", Text, true, "run directory (default: a fresh runs/<config>-<date>-<time>); an existing run is refused without --resume or --overwrite"),
    field("train", "batch_size", "batch_size", Number, false, "rows per optimiser step (default 64)"),
    field("train", "epochs", "epochs", Number, false, "passes over the training set (default 1000)"),
    field("train", "lr", "lr", Number, true, "learning rate, constant after the warm-up (default 1e-4)"),
    field("train", "weight_decay", "weight_decay", Number, true, "weight decay: coupled L2 for adam, decoupled for adamw (default 0)"),
    field("train", "warmup_steps", "warmup_steps", Number, true, "linear warm-up in optimiser steps (default 0)"),
    field("train", "optimizer", "optimizer", Text, true, "adam or adamw (default adam)"),
    field("train", "use_amp", "use_amp", Bool, false, "mixed precision on CUDA; no-op on CPU (default true)"),
    field("train", "seed", "seed", Number, true, "seed of initialisation, shuffles and dropout (default 42)"),
    field("train", "rng", "rng", Text, false, "training stream: ours (default) or torch (the original's draws and arithmetic: its initial weights, data order, dropout and trajectory; single runs)"),
    field("train", "log_every", "log_every", Number, true, "log the training batch every N steps and on each epoch's first (default 50)"),
    field("train", "eval_every", "eval_every", Number, true, "print the evaluation table every N epochs (default 10)"),
    field("train", "save_every", "save_every", Number, true, "keep a checkpoint epochNNN every N epochs and `best` by macro CE; 0 = neither (default 0; `last` is always written)"),
    field("train", "checkpoint_every", "checkpoint_every", Number, true, "refresh the resumable `last` checkpoint every N epochs (default 1)"),
    field("train", "checkpoint_seconds", "checkpoint_seconds", Number, true, "... but not sooner than this many seconds after the previous one; 0 = every time (default 10)"),
    field("train", "device", "device", Text, false, "cpu, cuda or auto (default auto)"),
    field("train", "threads", "threads", Number, false, "libtorch threads, at most 1024; 0 = libtorch's default (default 0)"),
    field("train", "geometry", "geometry", Text, true, "geometry tracking: off, eval (every eval_every epochs) or log (log-spaced steps)"),
    field("train", "pca_steps", "pca_steps", List, true, "global steps with a PCA snapshot of the entity embeddings"),
    field("train", "plots", "plots", Bool, true, "draw the run's plots at the end (default true)"),
    field("wandb", "use_wandb", "use_wandb", Bool, true, "stream to W&B when WANDB_API_KEY is set (default true)"),
    field("wandb", "project", "project", Text, true, "W&B project; WANDB_PROJECT wins (default emergent_analogy)"),
    field("wandb", "run_name", "run_name", Text, true, "W&B run name; WANDB_RUN_NAME wins (default run_<unix time>)"),
];

/// The tables, in file order.
pub const TABLES: [&str; 4] = ["data", "model", "train", "wandb"];

/// The field of a flat name (`lr`, `data_seed`) or a qualified one (`train.lr`, `data.seed`).
pub fn find(key: &str) -> Option<&'static Field> {
    match key.split_once('.') {
        Some((table, name)) => FIELDS.iter().find(|f| f.table == table && f.name == name),
        None => FIELDS.iter().find(|f| f.flat == key),
    }
}

/// Whether `table.name` may differ between the members of one ensemble.
pub fn is_per_member(table: &str, name: &str) -> bool {
    FIELDS
        .iter()
        .any(|f| f.table == table && f.name == name && f.per_member)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RunConfig;

    /// Every key the structs serialise (with every optional key set) is in the table, and
    /// nothing else is.
    #[test]
    fn the_table_is_the_configuration_structs() {
        let mut cfg = RunConfig::default();
        cfg.data.sub_size = Some(4);
        cfg.data.rng = kg_data::RngKind::Numpy;
        cfg.train.rng = crate::TrainRng::Torch;
        cfg.wandb.run_name = Some("x".into());
        let tree = toml::Value::try_from(&cfg).unwrap();
        let mut from_structs = Vec::new();
        for table in TABLES {
            for key in tree[table].as_table().unwrap().keys() {
                from_structs.push(format!("{table}.{key}"));
            }
        }
        from_structs.sort();
        let mut from_table: Vec<String> = FIELDS
            .iter()
            .map(|f| format!("{}.{}", f.table, f.name))
            .collect();
        from_table.sort();
        assert_eq!(from_structs, from_table);
        let mut flats: Vec<&str> = FIELDS.iter().map(|f| f.flat).collect();
        flats.sort_unstable();
        flats.dedup();
        assert_eq!(flats.len(), FIELDS.len(), "flat names are unique");
    }

    /// Each key's kind is what its value serialises to.
    #[test]
    fn kinds_match_the_values() {
        let mut cfg = RunConfig::default();
        cfg.data.sub_size = Some(4);
        cfg.wandb.run_name = Some("x".into());
        let tree = toml::Value::try_from(&cfg).unwrap();
        for f in FIELDS {
            let Some(v) = tree[f.table].get(f.name) else {
                continue;
            };
            let kind = match v {
                toml::Value::Boolean(_) => Bool,
                toml::Value::Integer(_) | toml::Value::Float(_) => Number,
                toml::Value::String(_) => Text,
                toml::Value::Array(_) => List,
                _ => panic!("{}.{}: unexpected {v:?}", f.table, f.name),
            };
            assert_eq!(kind, f.kind, "{}.{}", f.table, f.name);
        }
    }

    /// `configs/default.toml` documents every key.
    #[test]
    fn the_default_config_file_names_every_key() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/default.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let mut table = "";
        let mut seen = Vec::new();
        for line in text.lines() {
            let line = line.trim_start_matches("# ").trim();
            if let Some(t) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                table = TABLES.iter().find(|x| **x == t).copied().unwrap_or("");
            } else if let Some((key, _)) = line.split_once(" = ") {
                seen.push(format!("{table}.{}", key.trim()));
            }
        }
        for f in FIELDS {
            let q = format!("{}.{}", f.table, f.name);
            assert!(seen.contains(&q), "{q} is not in configs/default.toml");
        }
    }

    #[test]
    fn flat_and_qualified_names_find_their_field() {
        assert_eq!(find("lr").map(|f| f.table), Some("train"));
        assert_eq!(find("seed").map(|f| f.table), Some("train"));
        assert_eq!(find("data_seed").map(|f| f.name), Some("seed"));
        assert_eq!(find("data.seed").map(|f| f.flat), Some("data_seed"));
        assert_eq!(find("model.lr"), None);
        assert_eq!(find("learning_rate"), None);
        assert!(is_per_member("train", "lr"));
        assert!(!is_per_member("train", "batch_size"));
    }
}
