//! Metrics-log keys of the geometry and mechanism metrics (SPEC §5).
//!
//! The same names are used in `metrics.jsonl` and on W&B, so plots and dashboards find them.
//! [`crate::GeometryReport::entries`] uses the `geom/` keys of the E/U-based metrics; the
//! attention and read-out keys are for the trainer, which combines the forward-pass metrics.

/// [`crate::dirichlet_energy`] on the input embedding.
pub const DIRICHLET_ENERGY: &str = "geom/dirichlet_energy";
/// [`crate::dirichlet_energy`] on the head (unembedding) rows.
pub const DIRICHLET_ENERGY_HEAD: &str = "geom/dirichlet_energy_head";
/// [`crate::translation_consistency`].
pub const TRANSLATION_CONSISTENCY: &str = "geom/translation_consistency";
/// [`crate::parallelogram_score`].
pub const PARALLELOGRAM: &str = "geom/parallelogram";
/// [`crate::analogy_addition_score`].
pub const ANALOGY_ADDITION: &str = "geom/analogy_addition";
/// [`crate::isometry`].
pub const ISOMETRY: &str = "geom/isometry";
/// [`crate::cluster_separation`].
pub const CLUSTER_SEPARATION: &str = "geom/cluster_separation";
/// [`crate::parallelism`] over the ID analogical facts.
pub const PARALLELISM_ID: &str = "geom/parallelism/id_analogical";
/// [`crate::parallelism`] over the OOD analogical facts.
pub const PARALLELISM_OOD: &str = "geom/parallelism/ood_analogical";
/// [`crate::attention_progress`] over the ID analogical facts.
pub const ATTN_PROGRESS_ID: &str = "geom/attn_progress/id_analogical";
/// [`crate::attention_progress`] over the OOD analogical facts.
pub const ATTN_PROGRESS_OOD: &str = "geom/attn_progress/ood_analogical";
/// [`crate::Readout::hit1`] over the ID analogical facts.
pub const HIT1_ID: &str = "geom/hit1/id_analogical";
/// [`crate::Readout::hit1`] over the OOD analogical facts.
pub const HIT1_OOD: &str = "geom/hit1/ood_analogical";
/// [`crate::Readout::mrr`] over the ID analogical facts.
pub const MRR_ID: &str = "geom/mrr/id_analogical";
/// [`crate::Readout::mrr`] over the OOD analogical facts.
pub const MRR_OOD: &str = "geom/mrr/ood_analogical";
