//! The original's YAML configurations, read as ours: a run config (`configs/default.yaml`: flat
//! keys at the top level, generation parameters under `data:`) and a sweep file
//! (`configs/sweep_config.yaml`: `data_sweep`, `optimizer_sweep`, `model_sweep`, `seed_sweep`,
//! `fixed`). Values keep their meaning: `lr: 1e-4` is the number 1e-4 (YAML 1.2, and any text
//! that reads as a number where a key takes one). Keys the original has and this project does
//! not use (`num_workers`, `data.output_dir`) are accepted and ignored; any other unknown key is
//! an error naming it.
//!
//! Parsed with `yaml-rust2` (a maintained, pure-Rust YAML 1.2 parser) into a TOML tree, which
//! then goes through the same deserialisation and validation as a TOML file.

use toml::Value as Toml;
use yaml_rust2::{Yaml, YamlLoader};

use crate::fields::{self, ValueKind};

/// Keys of the original's configs that have no counterpart here (what they did does not apply:
/// data-loader workers, the generator's own output directory).
const IGNORED: [&str; 2] = ["num_workers", "output_dir"];

/// Whether `path` names a YAML file (`.yaml` or `.yml`).
pub fn is_yaml(path: &std::path::Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"))
}

fn load(text: &str) -> Result<Yaml, String> {
    let mut docs = YamlLoader::load_from_str(text).map_err(|e| e.to_string())?;
    match docs.len() {
        0 => Ok(Yaml::Hash(Default::default())),
        1 => Ok(docs.remove(0)),
        n => Err(format!("{n} YAML documents; a config is one")),
    }
}

/// A YAML scalar or list as the TOML value a key of `kind` takes.
fn to_toml(y: &Yaml, kind: Option<ValueKind>, key: &str) -> Result<Option<Toml>, String> {
    let number = |text: &str| -> Option<Toml> {
        text.parse::<i64>()
            .map(Toml::Integer)
            .ok()
            .or_else(|| text.parse::<f64>().ok().map(Toml::Float))
    };
    Ok(Some(match y {
        Yaml::Null => return Ok(None),
        Yaml::Boolean(b) => Toml::Boolean(*b),
        Yaml::Integer(i) => match kind {
            Some(ValueKind::Text) => Toml::String(i.to_string()),
            _ => Toml::Integer(*i),
        },
        Yaml::Real(r) => Toml::Float(
            r.parse::<f64>()
                .map_err(|_| format!("`{key}`: {r:?} is not a number"))?,
        ),
        Yaml::String(s) => match kind {
            Some(ValueKind::Number) => {
                number(s).ok_or_else(|| format!("`{key}`: {s:?} is not a number"))?
            }
            Some(ValueKind::Bool) => match s.to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" => Toml::Boolean(true),
                "false" | "no" | "off" => Toml::Boolean(false),
                _ => return Err(format!("`{key}`: {s:?} is not true or false")),
            },
            _ => Toml::String(s.clone()),
        },
        Yaml::Array(items) => {
            let inner = match kind {
                Some(ValueKind::List) => None,
                other => other,
            };
            Toml::Array(
                items
                    .iter()
                    .map(|i| to_toml(i, inner, key))
                    .collect::<Result<Vec<_>, _>>()?
                    .into_iter()
                    .flatten()
                    .collect(),
            )
        }
        Yaml::Hash(_) => return Err(format!("`{key}`: a table where a value was expected")),
        Yaml::Alias(_) | Yaml::BadValue => return Err(format!("`{key}`: unreadable value")),
    }))
}

fn entries(y: &Yaml, what: &str) -> Result<Vec<(String, Yaml)>, String> {
    match y {
        Yaml::Hash(h) => h
            .iter()
            .map(|(k, v)| match k {
                Yaml::String(k) => Ok((k.clone(), v.clone())),
                other => Err(format!("{what}: key {other:?} is not a name")),
            })
            .collect(),
        Yaml::Null => Ok(Vec::new()),
        _ => Err(format!("{what}: expected a mapping of keys to values")),
    }
}

/// Puts `key = value` into its table of `tree` (`table` when the key is only meaningful
/// there, as under `data:`).
fn place(tree: &mut toml::Table, table: Option<&str>, key: &str, y: &Yaml) -> Result<(), String> {
    if IGNORED.contains(&key) {
        return Ok(());
    }
    let field = match table {
        Some(t) => fields::find(&format!("{t}.{key}")),
        None => fields::find(key),
    }
    .ok_or_else(|| match table {
        Some(t) => format!("unknown key `{key}` in `{t}:`"),
        None => format!("unknown key `{key}`"),
    })?;
    if let Some(v) = to_toml(y, Some(field.kind), key)? {
        tree.entry(field.table)
            .or_insert_with(|| Toml::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or("a table expected")?
            .insert(field.name.to_string(), v);
    }
    Ok(())
}

/// The original's run-config YAML as the TOML tree of a [`crate::RunConfig`]: flat keys at the
/// top level (the original's `seed` is the training seed, as in its `train.py`), the `data:`
/// mapping into `[data]`, and this project's own tables (`model:`, `train:`, `wandb:`) too.
///
/// # Errors
/// The YAML error, or a message naming an unknown key or a value of the wrong kind.
pub fn run_config_toml(text: &str) -> Result<toml::Table, String> {
    let mut tree = toml::Table::new();
    for (key, value) in entries(&load(text)?, "the config")? {
        if fields::TABLES.contains(&key.as_str()) {
            for (k, v) in entries(&value, &format!("`{key}:`"))? {
                place(&mut tree, Some(&key), &k, &v)?;
            }
        } else {
            place(&mut tree, None, &key, &value)?;
        }
    }
    Ok(tree)
}

/// The original's sweep YAML (`sweep_config.yaml`) as the TOML text of a sweep file named
/// `name`: the grid of `data_sweep`, `optimizer_sweep` and `model_sweep` (in that order) as
/// `[parameters]`, `fixed` as `[fixed]` (its `seed` seeds the generator and the training, as the
/// original's `sweep.py` uses it for both unless a data seed is given), `seed_sweep.seed` as
/// the training seeds.
///
/// # Errors
/// As [`run_config_toml`], and a sweep section that is not a mapping of keys to lists.
pub fn sweep_toml(text: &str, name: &str) -> Result<String, String> {
    let mut parameters = toml::Table::new();
    let mut fixed = toml::Table::new();
    let mut seeds: Option<Toml> = None;
    for (section, value) in entries(&load(text)?, "the sweep")? {
        match section.as_str() {
            "data_sweep" | "optimizer_sweep" | "model_sweep" => {
                for (key, values) in entries(&value, &format!("`{section}:`"))? {
                    let field = fields::find(&key)
                        .ok_or_else(|| format!("`{section}:`: unknown key `{key}`"))?;
                    let Yaml::Array(_) = values else {
                        return Err(format!("`{section}:` `{key}`: expected a list of values"));
                    };
                    if let Some(list) = to_toml(&values, Some(field.kind), &key)? {
                        if key == "seed" {
                            seeds = Some(list);
                        } else {
                            parameters.insert(field.flat.to_string(), list);
                        }
                    }
                }
            }
            "seed_sweep" => {
                for (key, values) in entries(&value, "`seed_sweep:`")? {
                    if key != "seed" {
                        return Err(format!("`seed_sweep:`: unknown key `{key}`"));
                    }
                    seeds = to_toml(&values, Some(ValueKind::List), "seed")?;
                }
            }
            "fixed" => {
                let mut has_data_seed = false;
                let mut seed = None;
                for (key, v) in entries(&value, "`fixed:`")? {
                    if IGNORED.contains(&key.as_str()) {
                        continue;
                    }
                    let field = fields::find(&key)
                        .ok_or_else(|| format!("`fixed:`: unknown key `{key}`"))?;
                    has_data_seed |= field.flat == "data_seed";
                    if let Some(t) = to_toml(&v, Some(field.kind), &key)? {
                        if key == "seed" {
                            seed = Some(t.clone());
                        }
                        fixed.insert(field.flat.to_string(), t);
                    }
                }
                if let (Some(seed), false) = (seed, has_data_seed) {
                    fixed.insert("data_seed".into(), seed);
                }
            }
            other => return Err(format!("unknown section `{other}`")),
        }
    }
    let mut doc = toml::Table::new();
    doc.insert("name".into(), Toml::String(name.to_string()));
    doc.insert(
        "description".into(),
        Toml::String("converted from the original's sweep YAML".into()),
    );
    if let Some(seeds) = seeds {
        doc.insert("seeds".into(), seeds);
    }
    doc.insert("fixed".into(), Toml::Table(fixed));
    doc.insert("parameters".into(), Toml::Table(parameters));
    toml::to_string(&doc).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RunConfig;

    /// A config file of the original (see `tests/fixtures/README.md`).
    fn original(name: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/original-configs")
            .join(name);
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn the_originals_default_yaml_reads_with_the_same_values() {
        let cfg = RunConfig::from_yaml_str(&original("default.yaml")).unwrap();
        assert_eq!(cfg.train.lr, 1e-4);
        assert_eq!(cfg.model.n_layer, 2);
        assert_eq!(cfg.data.analogical_ood_ratio, 0.1);
        assert_eq!(cfg.data.sub_size, Some(5));
        assert_eq!(cfg.train.epochs, 100);
        assert_eq!(cfg.train.seed, 42);
        assert_eq!(cfg.wandb.project, "emergent_analogy_20260115");
        assert_eq!(cfg.wandb.run_name, None);
        assert_eq!(
            cfg.train.save_dir,
            std::path::PathBuf::from("/app/runs/functor_experiment")
        );
        cfg.validate().unwrap();
    }

    #[test]
    fn numbers_written_as_text_are_numbers_and_bad_keys_are_named() {
        let cfg =
            RunConfig::from_yaml_str("lr: '3e-3'\nepochs: \"7\"\ndata:\n  seed: 3\n").unwrap();
        assert_eq!(
            (cfg.train.lr, cfg.train.epochs, cfg.data.seed),
            (3e-3, 7, 3)
        );
        for (text, want) in [
            ("learning_rate: 1", "learning_rate"),
            ("data:\n  lr: 1", "`lr` in `data:`"),
            ("lr: fast", "`lr`"),
            ("lr: [1, 2]", "lr"),
            ("- a\n- b", "mapping"),
            ("lr: 1\n---\nlr: 2", "documents"),
        ] {
            let err = RunConfig::from_yaml_str(text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn the_originals_sweep_yaml_becomes_a_sweep_file() {
        let text = sweep_toml(&original("sweep_config.yaml"), "sweep_config").unwrap();
        let doc: toml::Table = toml::from_str(&text).unwrap();
        let params = doc["parameters"].as_table().unwrap();
        let keys: Vec<&String> = params.keys().collect();
        assert_eq!(keys.len(), 9);
        assert_eq!(
            params["compositional_ood_ratio"].as_array().unwrap().len(),
            6
        );
        assert_eq!(
            params["weight_decay"].as_array().unwrap()[3].as_integer(),
            Some(1)
        );
        let fixed = doc["fixed"].as_table().unwrap();
        assert_eq!(fixed["seed"].as_integer(), Some(2));
        assert_eq!(
            fixed["data_seed"].as_integer(),
            Some(2),
            "the original seeds both"
        );
        assert!(!fixed.contains_key("num_workers"));
        assert!(
            sweep_toml("data_sweep:\n  lr_x: [1]\n", "s")
                .unwrap_err()
                .contains("lr_x")
        );
        assert!(sweep_toml("extra: 1\n", "s").unwrap_err().contains("extra"));
    }
}
