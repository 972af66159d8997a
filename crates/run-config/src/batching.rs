//! Which runs can train together as one batched ensemble (`trainer::run_members`): runs whose
//! configurations differ only in keys that act per run — the optimiser's hyper-parameters, the
//! seed, logging, checkpoints, analysis schedule, run directory and W&B identity. Every other key
//! fixes a shape, the dataset or the shared computation.

use crate::{RunConfig, TrainRng};

/// Whether the runs of `a` and `b` can train in one ensemble: every key that is not per member
/// ([`crate::fields::Field::per_member`]: `save_dir`, `lr`, `weight_decay`, `warmup_steps`,
/// `optimizer`, `seed`, `log_every`, `eval_every`, `save_every`, `geometry`, `pca_steps`, `plots`
/// and the `[wandb]` table) must be equal, and each must be [`supported`] (no dropout, our
/// stream).
///
/// # Errors
/// A message naming the first key that prevents it (`` `batch_size` differs: 64 vs 32 ``).
pub fn compatible(a: &RunConfig, b: &RunConfig) -> Result<(), String> {
    supported(a)?;
    supported(b)?;
    let (Ok(ta), Ok(tb)) = (toml::Value::try_from(a), toml::Value::try_from(b)) else {
        return Err("the configurations cannot be compared".into());
    };
    let empty = toml::value::Table::new();
    for table in ["data", "model", "train"] {
        let sa = ta.get(table).and_then(|t| t.as_table()).unwrap_or(&empty);
        let sb = tb.get(table).and_then(|t| t.as_table()).unwrap_or(&empty);
        let mut keys: Vec<&String> = sa.keys().chain(sb.keys()).collect();
        keys.sort();
        keys.dedup();
        for key in keys {
            if crate::fields::is_per_member(table, key) {
                continue;
            }
            let (va, vb) = (sa.get(key), sb.get(key));
            if va != vb {
                let show =
                    |v: Option<&toml::Value>| v.map_or("unset".to_string(), |v| v.to_string());
                let name = if key == "seed" {
                    format!("{table}.{key}")
                } else {
                    key.clone()
                };
                return Err(format!("`{name}` differs: {} vs {}", show(va), show(vb)));
            }
        }
    }
    Ok(())
}

/// Whether a run can be an ensemble member at all. Refused: `dropout > 0` (ensemble mode cannot
/// reproduce dropout exactly) and `rng = "torch"` (the original's stream is one global
/// generator whose draws interleave initialisation, data order and evaluation of one run; such
/// runs train one per process, which is how `sweep` runs them).
///
/// # Errors
/// A message naming the key.
pub fn supported(cfg: &RunConfig) -> Result<(), String> {
    if cfg.train.rng == TrainRng::Torch {
        return Err(
            "`rng` = \"torch\" is not supported in ensemble mode (the original's stream is one global generator per run); train such runs one per process".into(),
        );
    }
    if cfg.model.dropout > 0.0 {
        return Err(format!(
            "`dropout` = {} is not supported in ensemble mode (members' dropout masks would not equal their separate runs)",
            cfg.model.dropout
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_on_the_originals_stream_are_never_batched() {
        let a = RunConfig::default();
        let mut b = RunConfig::default();
        b.train.seed = 7;
        assert_eq!(compatible(&a, &b), Ok(()));
        b.train.rng = TrainRng::Torch;
        let e = supported(&b).unwrap_err();
        assert!(e.contains("`rng`"), "{e}");
        let e = compatible(&a, &b).unwrap_err();
        assert!(e.contains("`rng`"), "{e}");
        let e = compatible(&b, &b).unwrap_err();
        assert!(e.contains("`rng`"), "{e}");
    }
}
