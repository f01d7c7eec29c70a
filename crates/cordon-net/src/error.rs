//! Typed errors of the broker's setup. Per-connection failures are not errors of
//! the broker: they are decisions, logged to the audit log.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    #[error("cordon's CA in {}: {message} (hint: remove that directory to make a new CA)", .dir.display())]
    Ca { dir: PathBuf, message: String },

    #[error("TLS: {0}")]
    Tls(String),

    #[error("--upstream-ca {}: {message}", .file.display())]
    UpstreamCa { file: PathBuf, message: String },

    #[error(
        "--secret {name}: the host environment has no variable {name} (hint: export it before running cordon)"
    )]
    SecretMissing { name: String },

    #[error("{what} {}: {source}", .path.display())]
    File {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("the egress broker: {0}")]
    Runtime(#[source] std::io::Error),
}
