//! The crate's single error type.

use std::path::PathBuf;

/// Everything that can go wrong while configuring, generating, reading or writing a dataset.
///
/// Variants carry enough context to find the problem without a debugger: the config key and
/// value, or the file, the 0-based row of its JSON array and the offending text.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A generation parameter is out of range or inconsistent with another one.
    #[error("invalid data config: {key} = {value}: {reason}")]
    Config {
        /// The `[data]` key at fault.
        key: &'static str,
        /// Its value as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A text is not exactly a concatenation of vocabulary tokens.
    #[error("cannot tokenise {text:?} at byte {offset}: {reason}")]
    Token {
        /// The whole text.
        text: String,
        /// Byte offset of the first character that could not be read as a token.
        offset: usize,
        /// What was found there.
        reason: String,
    },

    /// An entry of a token list is not a well-formed token or repeats an earlier one.
    #[error("vocabulary entry {index} {token:?}: {reason}")]
    VocabEntry {
        /// 0-based position in the token list.
        index: usize,
        /// The entry.
        token: String,
        /// What is wrong with it.
        reason: String,
    },

    /// One row of a JSON array file is malformed or inconsistent with the rest of the dataset.
    #[error("{}: row {row}: {text}: {reason}", file.display())]
    Row {
        /// The file holding the row.
        file: PathBuf,
        /// 0-based index of the row in the file's JSON array.
        row: usize,
        /// The offending text (or the row's JSON when no text could be read).
        text: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A file is malformed or inconsistent as a whole (not an array, mismatching `meta.json`, …).
    #[error("{}: {reason}", file.display())]
    File {
        /// The file at fault.
        file: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A file is not valid JSON at all.
    // The cause is part of the message (and deliberately not a `source()`), so that a plain
    // `Display` is complete and error chains do not print it twice.
    #[error("{}: invalid JSON: {error}", file.display())]
    Json {
        /// The file that failed to parse.
        file: PathBuf,
        /// The parser's error, with line and column.
        error: serde_json::Error,
    },

    /// A required file of a dataset directory is absent.
    #[error("{}: missing (a dataset directory needs vocab.json, train.json and test.json)", path.display())]
    Missing {
        /// The path that does not exist.
        path: PathBuf,
    },

    /// Reading or writing a path failed.
    #[error("{}: {error}", path.display())]
    Io {
        /// The path being read, written or created.
        path: PathBuf,
        /// The operating system's error.
        error: std::io::Error,
    },

    /// The analogical facts do not describe a bijection E1 → E2.
    #[error("functor: {reason}")]
    Functor {
        /// Which fact breaks the bijection, and how.
        reason: String,
    },

    /// A fact-type name is not one of the seven known ones.
    #[error("unknown fact type {found:?}; expected one of {}", crate::FactType::names().join(", "))]
    UnknownType {
        /// The name that was given.
        found: String,
    },
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            error,
        }
    }

    pub(crate) fn row(
        file: impl Into<PathBuf>,
        row: usize,
        text: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        DataError::Row {
            file: file.into(),
            row,
            text: text.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn file(file: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        DataError::File {
            file: file.into(),
            reason: reason.into(),
        }
    }
}
