//! The names of what a run records, defined once: the keys of `metrics.jsonl` rows, of the W&B
//! history and summary, and the series the plots, reports and sweeps read. The trainer writes
//! rows with these keys; `plots`, `sweep` and `report` read them through this module, so a
//! name changes in one place.
//!
//! - every logged row: [`GLOBAL_STEP`];
//! - a training-batch row (every `log_every` batches and each epoch's first): [`TRAIN_CE_LAST`],
//!   [`TRAIN_ACC_LAST`], [`TRAIN_PROB_LAST`], [`LR`];
//! - an epoch row: [`EPOCH`], [`TRAIN_CE_EPOCH`], [`VAL_MACRO_CE`], [`VAL_MACRO_ACC`], and per
//!   fact type `t` and [`TypeMetric`] `m` the key [`per_type`]`(m, t)` = `val_<m>/<t>`
//!   (`val_ACC/ood_analogical`, …), plus the [`geom`] keys when the geometry is tracked.

pub use kg_data::FactType;

/// The optimiser step of a row (every row has it).
pub const GLOBAL_STEP: &str = "global_step";
/// The completed epoch of an epoch row.
pub const EPOCH: &str = "epoch";
/// Mean last-token cross-entropy of the logged training batch.
pub const TRAIN_CE_LAST: &str = "train/CE_last";
/// Accuracy of the logged training batch.
pub const TRAIN_ACC_LAST: &str = "train/ACC_last";
/// Mean probability of the answer in the logged training batch.
pub const TRAIN_PROB_LAST: &str = "train/PROB_last";
/// Learning rate of the logged step.
pub const LR: &str = "lr";
/// Mean training cross-entropy over the epoch's batches.
pub const TRAIN_CE_EPOCH: &str = "train/CE_epoch";
/// Logged as 1 on the epoch row where the training loss is first found to have diverged (far
/// above where it started).
pub const DIVERGED: &str = "train/diverged";
/// Mean of the per-type CE over the types present.
pub const VAL_MACRO_CE: &str = "val/macro/CE";
/// Mean of the per-type ACC over the types present.
pub const VAL_MACRO_ACC: &str = "val/macro/ACC";

/// `val_ACC/ood_analogical`, the accuracy on held-out functor facts: the analogy the paper is
/// about (equal to `per_type(TypeMetric::Acc, FactType::OodAnalogical)`).
pub const OOD_ANALOGICAL_ACC: &str = "val_ACC/ood_analogical";
/// `val_ACC/near_ood_compositional`, the accuracy on held-out compositions of seen hops.
pub const NEAR_OOD_COMPOSITIONAL_ACC: &str = "val_ACC/near_ood_compositional";

/// A per-type evaluation metric (`val_<metric>/<type>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TypeMetric {
    /// Mean last-token cross-entropy.
    Ce,
    /// `exp(min(CE, 20))`.
    Ppl,
    /// Share of rows whose argmax is the answer.
    Acc,
    /// Mean softmax probability of the answer.
    Prob,
    /// Rows of the type.
    N,
}

impl TypeMetric {
    /// Every per-type metric, in the order rows list them.
    pub const ALL: [TypeMetric; 5] = [
        TypeMetric::Ce,
        TypeMetric::Ppl,
        TypeMetric::Acc,
        TypeMetric::Prob,
        TypeMetric::N,
    ];

    /// The name in keys (`CE`, `PPL`, `ACC`, `PROB`, `N`).
    pub fn as_str(self) -> &'static str {
        match self {
            TypeMetric::Ce => "CE",
            TypeMetric::Ppl => "PPL",
            TypeMetric::Acc => "ACC",
            TypeMetric::Prob => "PROB",
            TypeMetric::N => "N",
        }
    }
}

/// `val_<metric>/<type>`, e.g. `val_ACC/ood_analogical`.
pub fn per_type(metric: TypeMetric, fact_type: FactType) -> String {
    per_type_name(metric, fact_type.as_str())
}

/// [`per_type`] for a type given by its name (as read from a metrics file, possibly a type this
/// version does not know).
pub fn per_type_name(metric: TypeMetric, fact_type: &str) -> String {
    format!("val_{}/{fact_type}", metric.as_str())
}

/// The metric and the type name of a `val_<metric>/<type>` key (the type as written, which may
/// be one this version does not know); `None` for any other key.
pub fn parse_per_type(key: &str) -> Option<(TypeMetric, &str)> {
    let rest = key.strip_prefix("val_")?;
    let (metric, fact_type) = rest.split_once('/')?;
    let metric = TypeMetric::ALL.into_iter().find(|m| m.as_str() == metric)?;
    (!fact_type.is_empty()).then_some((metric, fact_type))
}

/// Keys of the geometry and mechanism metrics, logged on epoch rows when tracked (the `metrics`
/// crate computes them).
pub mod geom {
    /// The prefix every geometry key starts with.
    pub const PREFIX: &str = "geom/";
    /// Dirichlet energy of the functor graph on the input embeddings.
    pub const DIRICHLET_ENERGY: &str = "geom/dirichlet_energy";
    /// Dirichlet energy of the functor graph on the head (unembedding) rows.
    pub const DIRICHLET_ENERGY_HEAD: &str = "geom/dirichlet_energy_head";
    /// Translation consistency of `U[f(e)] − E[e]`.
    pub const TRANSLATION_CONSISTENCY: &str = "geom/translation_consistency";
    /// Mean cosine of `U[f(e)] − E[e]` with `E[<f>]`.
    pub const PARALLELOGRAM: &str = "geom/parallelogram";
    /// Mean cosine of `E[e] + E[<f>]` with `U[f(e)]`.
    pub const ANALOGY_ADDITION: &str = "geom/analogy_addition";
    /// Correlation of pairwise distances within `E[E1]` and `U[f(E1)]`.
    pub const ISOMETRY: &str = "geom/isometry";
    /// Distance of the two clusters' centroids over their spread.
    pub const CLUSTER_SEPARATION: &str = "geom/cluster_separation";
    /// Parallelism over the ID analogical facts.
    pub const PARALLELISM_ID: &str = "geom/parallelism/id_analogical";
    /// Parallelism over the OOD analogical facts.
    pub const PARALLELISM_OOD: &str = "geom/parallelism/ood_analogical";
    /// Attention from `<f>` to the source entity, ID analogical facts.
    pub const ATTN_PROGRESS_ID: &str = "geom/attn_progress/id_analogical";
    /// Attention from `<f>` to the source entity, OOD analogical facts.
    pub const ATTN_PROGRESS_OOD: &str = "geom/attn_progress/ood_analogical";
    /// Analogy read-out hit@1 over the ID analogical facts.
    pub const HIT1_ID: &str = "geom/hit1/id_analogical";
    /// Analogy read-out hit@1 over the OOD analogical facts.
    pub const HIT1_OOD: &str = "geom/hit1/ood_analogical";
    /// Analogy read-out mean reciprocal rank over the ID analogical facts.
    pub const MRR_ID: &str = "geom/mrr/id_analogical";
    /// Analogy read-out mean reciprocal rank over the OOD analogical facts.
    pub const MRR_OOD: &str = "geom/mrr/ood_analogical";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_type_keys_round_trip() {
        for m in TypeMetric::ALL {
            for t in FactType::ALL {
                let key = per_type(m, t);
                assert_eq!(parse_per_type(&key), Some((m, t.as_str())), "{key}");
            }
        }
        assert_eq!(
            per_type(TypeMetric::Acc, FactType::OodAnalogical),
            "val_ACC/ood_analogical"
        );
        assert_eq!(
            parse_per_type("val_ACC/zz_new"),
            Some((TypeMetric::Acc, "zz_new"))
        );
        assert_eq!(
            OOD_ANALOGICAL_ACC,
            per_type(TypeMetric::Acc, FactType::OodAnalogical)
        );
        assert_eq!(
            NEAR_OOD_COMPOSITIONAL_ACC,
            per_type(TypeMetric::Acc, FactType::NearOodCompositional)
        );
        for other in [
            VAL_MACRO_ACC,
            TRAIN_ACC_LAST,
            "val_XYZ/id_atomic",
            "val_ACC/",
            "lr",
        ] {
            assert_eq!(parse_per_type(other), None, "{other}");
        }
    }
}
