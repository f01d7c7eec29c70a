//! The one error type of every tool operation, and its JSON-RPC form
//! (docs/serve.md, "Errors").

use crate::protocol::{ErrorCode, ErrorData, ErrorObject};
use std::io;
use std::path::{Path, PathBuf};

/// Why a request failed. `Display` is the human sentence sent as `message`.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("Parse error: the line is not valid JSON ({0}).")]
    Parse(String),
    #[error("Invalid request: {0}.")]
    InvalidRequest(String),
    #[error("Method not found: {0:?} is not a method of cordon serve.")]
    MethodNotFound(String),
    #[error("Invalid params: {param}: {reason}.")]
    InvalidParams { param: String, reason: String },
    /// Refused by the policy. `rule` is e.g. `deny /home/u/.ssh`; `what` says why
    /// (`denied` or `read-only`).
    #[error("{op} {}: {what} by the policy (rule {rule}, {origin}).", path.display())]
    Denied {
        op: &'static str,
        what: &'static str,
        path: PathBuf,
        rule: String,
        origin: String,
    },
    #[error("{op} {}: no such file or directory.", path.display())]
    NotFound { op: &'static str, path: PathBuf },
    #[error("{op} {}: {source} ({errno}).", path.display())]
    Os {
        op: &'static str,
        path: PathBuf,
        errno: String,
        source: io::Error,
    },
    #[error("{0}: cancelled.")]
    Cancelled(String),
    #[error("{0}: timed out.")]
    TimedOut(String),
    #[error("Internal error: {0}.")]
    Internal(String),
    /// The egress broker refused or cannot do what was asked (`allowDomain`).
    #[error("{0}")]
    Broker(String),
}

impl ToolError {
    pub fn invalid(param: &str, reason: impl Into<String>) -> ToolError {
        ToolError::InvalidParams {
            param: param.to_string(),
            reason: reason.into(),
        }
    }

    /// An OS error on `path`; `NotFound` becomes error 2.
    pub fn io(op: &'static str, path: &Path, e: io::Error) -> ToolError {
        if e.kind() == io::ErrorKind::NotFound {
            return ToolError::NotFound {
                op,
                path: path.to_path_buf(),
            };
        }
        ToolError::Os {
            op,
            path: path.to_path_buf(),
            errno: errno_name(e.raw_os_error()),
            source: e,
        }
    }

    /// An OS error with a given errno (for conditions cordon detects itself).
    pub fn errno(op: &'static str, path: &Path, errno: i32) -> ToolError {
        ToolError::io(op, path, io::Error::from_raw_os_error(errno))
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            ToolError::Parse(_) => ErrorCode::ParseError,
            ToolError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            ToolError::MethodNotFound(_) => ErrorCode::MethodNotFound,
            ToolError::InvalidParams { .. } => ErrorCode::InvalidParams,
            ToolError::Denied { .. } => ErrorCode::Denied,
            ToolError::NotFound { .. } => ErrorCode::NotFound,
            ToolError::Os { .. } => ErrorCode::OsError,
            ToolError::Cancelled(_) => ErrorCode::Cancelled,
            ToolError::TimedOut(_) => ErrorCode::TimedOut,
            ToolError::Internal(_) => ErrorCode::InternalError,
            ToolError::Broker(_) => ErrorCode::OsError,
        }
    }

    /// What the error is about; a path that is not UTF-8 is sent lossily.
    pub fn data(&self) -> Option<ErrorData> {
        let path = |p: &Path| Some(p.to_string_lossy().into_owned());
        match self {
            ToolError::InvalidParams { param, .. } => Some(ErrorData {
                param: Some(param.clone()),
                ..ErrorData::default()
            }),
            ToolError::Denied {
                path: p,
                rule,
                origin,
                ..
            } => Some(ErrorData {
                path: path(p),
                rule: Some(rule.clone()),
                origin: Some(origin.clone()),
                ..ErrorData::default()
            }),
            ToolError::NotFound { path: p, .. } => Some(ErrorData {
                path: path(p),
                ..ErrorData::default()
            }),
            ToolError::Os { path: p, errno, .. } => Some(ErrorData {
                path: path(p),
                errno: Some(errno.clone()),
                ..ErrorData::default()
            }),
            _ => None,
        }
    }

    /// The JSON-RPC error object.
    pub fn to_object(&self) -> ErrorObject {
        ErrorObject {
            code: self.code().code(),
            message: self.to_string(),
            data: self.data().map(Box::new),
        }
    }
}

/// The symbolic name of an errno (`"EISDIR"`), or `"E<n>"` for a rare one.
pub fn errno_name(errno: Option<i32>) -> String {
    let Some(n) = errno else {
        return "EIO".to_string();
    };
    let name = match n {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::ENOEXEC => "ENOEXEC",
        libc::EBADF => "EBADF",
        libc::ECHILD => "ECHILD",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ETXTBSY => "ETXTBSY",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::ESPIPE => "ESPIPE",
        libc::EROFS => "EROFS",
        libc::EMLINK => "EMLINK",
        libc::EPIPE => "EPIPE",
        libc::ERANGE => "ERANGE",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::EDQUOT => "EDQUOT",
        libc::ESTALE => "ESTALE",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        _ => return format!("E{n}"),
    };
    name.to_string()
}
