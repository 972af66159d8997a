//! Geometry and mechanism metrics of the functor experiment: pure computations on
//! tensors and numbers, no I/O.
//!
//! The paper (*Emergent Analogical Reasoning in Transformers*, arXiv 2602.01992) explains
//! analogical generalisation by the embeddings of the two categories E1 and E2 aligning along
//! the functor `<f>`, after which attention routes the source entity to the `<f>` position. The
//! functions here measure both, from a model at any step; the trainer calls them at evaluation
//! time and logs the results under the names in [`keys`].
//!
//! # Overview
//! - Embedding geometry, from `E = tok_emb.weight` [V, C] and `U = head.weight` [V, C]
//!   (row `U[t]` is the unembedding of token `t`) and functor pairs `(s, f(s))` of token ids:
//!   [`dirichlet_energy`], [`translation_consistency`], [`parallelogram_score`],
//!   [`analogy_addition_score`], [`isometry`], [`cluster_separation`], [`parallelism`]
//!   (paper Eq. 3), and all of them at once as a [`GeometryReport`] from [`geometry_report`].
//! - Forward-pass metrics: [`attention_progress`] (paper Eq. 2) from attention weights, and the
//!   analogy read-out [`analogy_readout`] ([`Readout`]: hit@1, MRR among E2's ids) from logits,
//!   with its ranks from [`candidate_ranks`].
//! - [`pca_2d`] / [`pca_2d_rows`]: a deterministic 2-D PCA ([`Pca2d`]) for the functor-arrow
//!   picture (paper Fig. 7).
//! - [`MetricsError`]: the one error type; bad shapes, out-of-range ids and empty inputs are
//!   errors, never panics.
//!
//! # Conventions
//! - Inputs may live on any device and have any float dtype; they are detached and the
//!   computation runs in f64 on their device. Results come back as host `f64`s or small vectors.
//! - Token ids are `i64` (the model's index dtype) and are checked against `0..V` on the host
//!   before any indexing.
//! - Cosines floor each norm at 1e-8 and normalisation divides by max(‖x‖, 1e-8), so a zero
//!   vector has cosine 0 and normalises to zero instead of producing NaN.
//!
//! # Glossary
//! `V` vocabulary size, `C` model width (`d_model`), `B` batch size, `H` heads, `T` sequence
//! length, `n` number of pairs or points, `K` number of read-out candidates.

#![warn(missing_docs)]

mod error;
mod geometry;
pub mod keys;
mod pca;
mod readout;
mod tensor_util;

#[cfg(test)]
mod reference;

/// The device of the `#[ignore]`d CUDA tests (run by `scripts/device-check.sh` on a GPU
/// machine); without one they fail, saying so.
#[cfg(test)]
fn test_cuda() -> tch::Device {
    assert!(
        tch::Cuda::is_available(),
        "no CUDA device: libtorch sees none (no GPU, or libtorch_cuda.so not loaded)"
    );
    tch::Device::Cuda(0)
}

pub use error::{MetricsError, Result};
pub use geometry::{
    GeometryReport, analogy_addition_score, cluster_separation, dirichlet_energy, geometry_report,
    isometry, parallelism, parallelogram_score, translation_consistency,
};
pub use pca::{Pca2d, pca_2d, pca_2d_rows};
pub use readout::{
    ANALOGY_QUERY_POS, ANALOGY_SOURCE_POS, Readout, analogy_readout, attention_progress,
    candidate_ranks,
};
