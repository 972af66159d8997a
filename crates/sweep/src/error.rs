//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong while reading, expanding, running or plotting a sweep.
///
/// A failing *experiment* is not an error: it is an [`crate::Status::Failed`] outcome and the sweep
/// goes on. These are the failures that stop the sweep before it starts or after it ends.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// Another `sweep run` works in the same sweep directory.
    #[error("{}: another sweep (pid {pid}) is running in this directory; wait for it or stop it first", dir.display())]
    Locked {
        /// The sweep directory.
        dir: PathBuf,
        /// The holder's pid, as it wrote it.
        pid: String,
    },
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The sweep file is not valid TOML or does not have the documented shape.
    #[error("{}: {reason}", file.display())]
    Parse {
        /// The sweep file.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A key of the sweep file is unknown, reserved, repeated, or has a value the run
    /// configuration rejects.
    #[error("{}: `{key}`: {reason}", file.display())]
    Key {
        /// The sweep file.
        file: PathBuf,
        /// The key at fault, as written in the file.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The base configuration named by `base` cannot be read.
    #[error("{}: base config {}: {reason}", file.display(), base.display())]
    Base {
        /// The sweep file.
        file: PathBuf,
        /// The base config path as resolved.
        base: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `--scale` names a scale the sweep file does not describe.
    #[error("{}: no scale `{scale}` (available: {available})", file.display())]
    Scale {
        /// The sweep file.
        file: PathBuf,
        /// The requested scale.
        scale: String,
        /// The scales the file has.
        available: String,
    },
    /// `--index` is outside the sweep.
    #[error("{}: index {index} is out of range: the sweep has {count} experiments", file.display())]
    Index {
        /// The sweep file.
        file: PathBuf,
        /// The requested index.
        index: usize,
        /// Number of experiments.
        count: usize,
    },
    /// `--batch` is outside the sweep's batches.
    #[error("{}: batch {index} is out of range: the sweep has {count} batches", file.display())]
    Batch {
        /// The sweep file.
        file: PathBuf,
        /// The requested batch.
        index: usize,
        /// Number of batches.
        count: usize,
    },
    /// A figure name matches no file in the paper directory.
    #[error("no sweep file for figure `{name}` (looked for {})", searched.display())]
    Figure {
        /// The figure name.
        name: String,
        /// The path tried.
        searched: PathBuf,
    },
    /// A sweep file without a `[reproduce]` table was asked to draw a figure.
    #[error("{}: no [reproduce] table, so there is no figure to draw", file.display())]
    NotAFigure {
        /// The sweep file.
        file: PathBuf,
    },
    /// Generating or saving a dataset failed.
    #[error("dataset {}: {source}", dir.display())]
    Data {
        /// The cache directory.
        dir: PathBuf,
        /// The error.
        source: kg_data::DataError,
    },
    /// Reading metrics or drawing the figure failed.
    #[error(transparent)]
    Plot(#[from] plots::PlotError),
}

/// `Result` with [`SweepError`].
pub type Result<T> = std::result::Result<T, SweepError>;

/// Maps an I/O error to [`SweepError::Io`] naming `path`.
pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> SweepError {
    let path = path.into();
    move |source| SweepError::Io { path, source }
}
