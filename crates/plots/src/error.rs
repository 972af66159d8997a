//! The crate's single error type.

use std::path::PathBuf;

/// Everything that can go wrong while reading run directories or writing plots and reports.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// A file could not be read, written, created or copied.
    #[error("cannot {op} {path}")]
    Io {
        /// What was being done (`read`, `write`, `create dir`, …).
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A line of a JSON-lines file is not a JSON object.
    #[error("{path}:{line}: not a JSON object: {message}")]
    BadLine {
        /// The JSON-lines file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What the parser said, or what was found instead of an object.
        message: String,
    },
    /// A record of `pca.jsonl` does not have the documented shape.
    #[error("{path}:{line}: bad PCA record: {message}")]
    BadPca {
        /// The `pca.jsonl` file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// Which field was missing or of the wrong type.
        message: String,
    },
    /// The rasteriser rejected the SVG this crate produced (a bug here, reported rather than panicking).
    #[error("rasterising {path}: {message}")]
    Render {
        /// The PNG being written.
        path: PathBuf,
        /// What the SVG parser or PNG encoder said.
        message: String,
    },
    /// A plot was asked for without anything to draw.
    #[error("nothing to plot for {what}")]
    NoData {
        /// Which plot and why.
        what: String,
    },
    /// None of the report's inputs is or holds a run directory.
    #[error("no run directory (one holding a metrics.jsonl) in {inputs}")]
    NoRuns {
        /// The inputs, as given.
        inputs: String,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, PlotError>;

/// Helper that wraps an `io::Error` with the operation and path.
pub(crate) fn io_err(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> PlotError {
    let path = path.into();
    move |source| PlotError::Io { op, path, source }
}
