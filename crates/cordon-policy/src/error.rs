//! Typed errors. Every message names the place the problem came from (a file with
//! line and column, or a flag) so the CLI can print it as is after `cordon: `.

use crate::model::Origin;
use std::path::{Path, PathBuf};

/// Why a policy could not be resolved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A config file exists but could not be read.
    #[error("cannot read config file {}: {source}", .file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// `--config FILE` names a file that does not exist.
    #[error("config file {} does not exist (hint: check the path given with --config)", .file.display())]
    ConfigNotFound { file: PathBuf },

    /// A config file is not a regular file (a directory, a FIFO, a device, ...).
    #[error("config file {} is not a regular file", .file.display())]
    NotAFile { file: PathBuf },

    /// A config file is larger than [`crate::MAX_CONFIG_BYTES`].
    #[error("config file {} is too large (more than {limit} bytes)", .file.display())]
    TooLarge { file: PathBuf, limit: u64 },

    /// The file is not valid JSON.
    #[error("{}: {message}", location(.file, *.line, *.column))]
    Syntax {
        file: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },

    /// Valid JSON, but a value has the wrong type or an invalid value.
    #[error("{}: {message}", location(.file, *.line, *.column))]
    Invalid {
        file: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },

    /// A key the schema does not know (most often a typo).
    #[error(
        "{}: unknown field {field:?}{} (known fields: {})",
        location(.file, *.line, *.column),
        suggestion_text(.suggestion),
        crate::fields::KNOWN_FIELDS.join(", ")
    )]
    UnknownField {
        file: PathBuf,
        field: String,
        line: usize,
        column: usize,
        /// The known field closest to `field`, when one is close.
        suggestion: Option<&'static str>,
    },

    /// A value from a config file or a flag is unusable: an unknown `${VAR}`, an
    /// empty path, a malformed `--env`, an out-of-range limit.
    #[error("{origin}: {message}")]
    Value { origin: Origin, message: String },

    /// The workspace is missing, not a directory, or not allowed.
    #[error("workspace {}: {reason}", .path.display())]
    Workspace { path: PathBuf, reason: String },

    /// A path cordon must protect cannot be.
    #[error("cannot protect {}: {reason}", .path.display())]
    Protect { path: PathBuf, reason: String },

    /// An input from the environment (`$HOME`, the current directory, ...) is unusable.
    #[error("{what} {}: {reason}", .path.display())]
    Environment {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
}

fn location(file: &Path, line: usize, column: usize) -> String {
    if line == 0 {
        file.display().to_string()
    } else {
        format!("{}: line {line}, column {column}", file.display())
    }
}

fn suggestion_text(s: &Option<&'static str>) -> String {
    match s {
        Some(s) => format!(", did you mean {s:?}?"),
        None => String::new(),
    }
}
