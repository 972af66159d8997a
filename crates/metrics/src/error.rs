//! The crate's single error type.

use tch::{Device, TchError};

/// Everything that can go wrong while computing a metric.
///
/// Every variant names the metric (`what`) and, where it applies, the expected and the found
/// value, so a message read in a training log points at the offending input.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// A tensor does not have the rank or the dimensions the metric needs.
    #[error("{what}: expected shape {expected}, found {found:?}")]
    Shape {
        /// Metric and argument, e.g. `"dirichlet_energy: emb"`.
        what: &'static str,
        /// Human-readable expected shape, e.g. `"[V, C] with V = 12"`.
        expected: String,
        /// The tensor's actual size.
        found: Vec<i64>,
    },
    /// A token id (or a position) lies outside `0..bound`.
    #[error("{what}: id {id} at index {index} is out of range 0..{bound}")]
    IdOutOfRange {
        /// Metric and argument.
        what: &'static str,
        /// Position of the id in the list it came from.
        index: usize,
        /// The offending id.
        id: i64,
        /// Exclusive upper bound (vocabulary size, sequence length, ...).
        bound: i64,
    },
    /// A list has fewer entries than the metric needs to be defined.
    #[error("{what}: needs at least {expected} entries, found {found}")]
    TooFew {
        /// Metric and argument.
        what: &'static str,
        /// Minimum number of entries.
        expected: usize,
        /// Number of entries given.
        found: usize,
    },
    /// Two inputs that must have the same length do not.
    #[error("{what}: expected {expected} entries, found {found}")]
    LengthMismatch {
        /// Metric and argument.
        what: &'static str,
        /// Length implied by the other input.
        expected: usize,
        /// Length given.
        found: usize,
    },
    /// Two tensors that are combined live on different devices.
    #[error("{what}: expected a tensor on {expected:?}, found one on {found:?}")]
    DeviceMismatch {
        /// Metric and argument.
        what: &'static str,
        /// Device of the first tensor.
        expected: Device,
        /// Device of the other tensor.
        found: Device,
    },
    /// A candidate id appears more than once in a candidate set.
    #[error("{what}: id {id} is listed more than once")]
    DuplicateId {
        /// Metric and argument.
        what: &'static str,
        /// The repeated id.
        id: i64,
    },
    /// A read-out target is not one of the candidates it is ranked among.
    #[error("{what}: target {id} of row {row} is not among the candidates")]
    TargetNotCandidate {
        /// Metric and argument.
        what: &'static str,
        /// Batch row of the target.
        row: usize,
        /// The target id.
        id: i64,
    },
    /// The inputs are valid but the metric is mathematically undefined for them
    /// (zero variance, zero spread).
    #[error("{what} is undefined: {reason}")]
    Degenerate {
        /// Metric.
        what: &'static str,
        /// Why, with the offending value.
        reason: String,
    },
    /// libtorch refused an operation (out of memory, unsupported dtype on a device, ...).
    #[error("{what}: libtorch error: {source}")]
    Torch {
        /// Metric during which the operation failed.
        what: &'static str,
        /// The error reported by libtorch.
        #[source]
        source: TchError,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, MetricsError>;

/// Attaches the metric name to a libtorch error.
pub(crate) trait TorchContext<T> {
    fn ctx(self, what: &'static str) -> Result<T>;
}

impl<T> TorchContext<T> for std::result::Result<T, TchError> {
    fn ctx(self, what: &'static str) -> Result<T> {
        self.map_err(|source| MetricsError::Torch { what, source })
    }
}
