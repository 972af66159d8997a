//! Synthetic knowledge graphs with a functor between two isomorphic categories, as used to
//! study emergent analogical reasoning in Transformers (Minegishi et al., arXiv 2602.01992).
//!
//! A dataset has `N` entities split into two categories E1 and E2 of `sub_size` entities each
//! (plus "other" noise entities), `R` relations, and a functor token `<f>` mapping each E1
//! entity to its counterpart in E2. E1 is a complete directed graph, E2 mirrors its seen
//! edges; two-hop compositions and functor facts are split into seen (ID) and held-out (OOD)
//! parts. See [`generate`] for the exact construction.
//!
//! # Principal types
//! - [`DataConfig`]: the generation parameters (`[data]` table), validated before use.
//! - [`generate`]: parameters → [`Dataset`], deterministic from the seed via [`Sampler`]
//!   (ChaCha20, the default) or, with `rng = "numpy"` ([`RngKind`]), via [`numpy_rng`]: NumPy's
//!   `default_rng(seed)` in the original's build order, reproducing its files byte for byte.
//! - [`Dataset`]: vocabulary, train and test [`Example`]s, optional [`Meta`];
//!   [`Dataset::load`] / [`Dataset::save`] read and write the original's JSON layout
//!   byte-compatibly; [`Dataset::functor`] recovers the [`Functor`] from the facts.
//! - [`Vocab`]: token list with strict tokenisation of texts such as `<e_3><r_17><e_5>`.
//! - [`FactType`]: the seven kinds of fact (`id_atomic` … `ood_analogical`).
//! - [`pad_inputs`] → [`PaddedRows`]: right-padded input ids, lengths and answers as plain
//!   `i64` vectors, ready to become tensors in the trainer.
//! - [`DataError`]: the one error type, naming the key, file, row and text at fault.
//!
//! # Reproducibility
//! The same parameters and seed produce byte-identical files with `rand_chacha` 0.9.x and
//! `rand_core` 0.9.x on any platform; see [`rng`] for why and what a version bump must check.
//! With `rng = "numpy"` they are the files of the original's `generate_data.py` (NumPy's PCG64
//! stream, implemented here without NumPy).
//!
//! This crate does not depend on libtorch.

mod batch;
mod config;
mod dataset;
mod error;
mod fact;
mod generate;
mod generate_numpy;
pub mod json;
pub mod numpy_rng;
pub mod rng;
mod vocab;

pub use batch::{PaddedRows, pad_inputs};
pub use config::{DataConfig, RngKind};
pub use dataset::{Dataset, DirState, FORMAT_VERSION, Functor, Meta, PER_TYPE_FILES, files};
pub use error::DataError;
pub use fact::{Example, FactType};
pub use generate::generate;
pub use rng::Sampler;
pub use vocab::{FUNCTOR, FUNCTOR_INVERSE, TokenKind, Vocab};
