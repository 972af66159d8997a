//! Metrics-log keys of the geometry and mechanism metrics: the `geom` names of the
//! `run-config` crate's key module, where every recorded name is defined once (the same names
//! are used in `metrics.jsonl`, on W&B and in the plots). [`crate::GeometryReport::entries`]
//! uses the keys of the E/U-based metrics; the attention and read-out keys are for the trainer,
//! which combines the forward-pass metrics.

pub use run_config::keys::geom::*;
