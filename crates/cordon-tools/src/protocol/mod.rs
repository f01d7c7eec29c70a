//! The protocol of `cordon serve` (docs/serve.md) as types: each method's params
//! and result, the notifications, the error object and its codes, and the JSON-RPC
//! envelopes around them.
//!
//! One definition for every side: the server parses params into these types and
//! answers with them; the Rust clients (the test harnesses, `bench/tools`, and
//! [`crate::client`]) send and read them; the TypeScript client's types
//! (integrations/pi/protocol.ts) are generated from them, and docs/serve.md is
//! checked against them, by this module's tests.
//!
//! Paths travel as JSON strings: a path that is not UTF-8 is sent lossily
//! (U+FFFD for each bad byte), never refused and never a panic.

use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[cfg(test)]
use schemars::JsonSchema;

pub mod control;
#[cfg(test)]
mod tests;

/// A method: its name on the wire, its params, its result.
pub trait Method {
    const NAME: &'static str;
    type Params: Serialize + DeserializeOwned;
    type Result: Serialize + DeserializeOwned;
}

/// A notification the server sends: its name and its params.
pub trait Notify {
    const NAME: &'static str;
    type Params: Serialize + DeserializeOwned;
}

/// Declares the methods (or notifications) once: a marker type each, and the list
/// of names the server accepts and the tests render.
macro_rules! methods {
    ($( $(#[$doc:meta])* $marker:ident = $name:literal ($params:ty) -> $result:ty; )*) => {
        $(
            $(#[$doc])*
            pub enum $marker {}
            impl Method for $marker {
                const NAME: &'static str = $name;
                type Params = $params;
                type Result = $result;
            }
        )*
        /// Every method's name, in the order of docs/serve.md.
        pub const METHODS: &[&str] = &[$($name),*];

        /// Whether `result` is what `method` answers, for callers that hold results
        /// as JSON (the test harnesses check every result they get). An unknown
        /// method's result passes.
        pub fn check_result(method: &str, result: &serde_json::Value) -> serde_json::Result<()> {
            match method {
                $( $name => <$result>::deserialize(result).map(drop), )*
                _ => Ok(()),
            }
        }

        /// Calls `f` with each method's name, params schema (as the server reads
        /// them, from `reads`) and result schema (as it writes it, from `writes`).
        #[cfg(test)]
        pub(crate) fn each_method(
            reads: &mut schemars::SchemaGenerator,
            writes: &mut schemars::SchemaGenerator,
            f: &mut dyn FnMut(&str, schemars::Schema, schemars::Schema),
        ) {
            $( f($name, reads.subschema_for::<$params>(), writes.subschema_for::<$result>()); )*
        }
    };
}

macro_rules! notifications {
    ($( $(#[$doc:meta])* $marker:ident = $name:literal ($params:ty); )*) => {
        $(
            $(#[$doc])*
            pub enum $marker {}
            impl Notify for $marker {
                const NAME: &'static str = $name;
                type Params = $params;
            }
        )*
        /// Every notification's name.
        pub const NOTIFICATIONS: &[&str] = &[$($name),*];

        /// Whether `params` are what notification `method` carries; an unknown
        /// notification fails.
        pub fn check_notification(method: &str, params: &serde_json::Value) -> serde_json::Result<()> {
            match method {
                $( $name => <$params>::deserialize(params).map(drop), )*
                other => Err(de::Error::custom(format!("no notification {other:?} in the protocol"))),
            }
        }

        #[cfg(test)]
        pub(crate) fn each_notification(
            g: &mut schemars::SchemaGenerator,
            f: &mut dyn FnMut(&str, schemars::Schema),
        ) {
            $( f($name, g.subschema_for::<$params>()); )*
        }
    };
}

methods! {
    /// Runs a command with bash (else sh) in the sandbox.
    Exec = "exec" (ExecParams) -> ExecResult;
    /// Cancels a pending request.
    Cancel = "cancel" (CancelParams) -> CancelResult;
    /// Reads a file (or a part of it).
    Read = "read" (ReadParams) -> ReadResult;
    /// Writes a file atomically, creating missing parent directories.
    Write = "write" (WriteParams) -> WriteResult;
    /// A path's type, size, mtime and mode (a final symlink is not followed).
    Stat = "stat" (PathParams) -> StatResult;
    /// Whether a path exists.
    Exists = "exists" (PathParams) -> ExistsResult;
    /// A directory's entries, sorted by name.
    Readdir = "readdir" (PathParams) -> ReaddirResult;
    /// Creates a directory.
    Mkdir = "mkdir" (MkdirParams) -> Empty;
    /// Files whose path matches a glob.
    Find = "find" (FindParams) -> FindResult;
    /// Lines that match a pattern.
    Grep = "grep" (GrepParams) -> GrepResult;
    /// The session: its backend, layers, policy and recent denials.
    Status = "status" (Empty) -> StatusResult;
    /// Allows one more domain for the rest of the session (the egress broker).
    AllowDomain = "allowDomain" (AllowDomainParams) -> AllowDomainResult;
}

notifications! {
    /// Sent once, first, when the sandbox is ready.
    ReadyNote = "ready" (Ready);
    /// A chunk of a running `exec`'s output.
    ExecOutputNote = "exec.output" (ExecOutput<'static>);
}

// ---------------------------------------------------------------------------
// The envelopes

/// The `jsonrpc` member: always `"2.0"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Version;

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("2.0")
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Version, D::Error> {
        let v = Cow::<str>::deserialize(d)?;
        if v == "2.0" {
            Ok(Version)
        } else {
            Err(de::Error::invalid_value(
                de::Unexpected::Str(&v),
                &"\"2.0\"",
            ))
        }
    }
}

#[cfg(test)]
impl JsonSchema for Version {
    fn schema_name() -> Cow<'static, str> {
        "Version".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "const": "2.0" })
    }
}

/// A request's id: a number or a string. (JSON-RPC also allows a null id, which
/// the server echoes; such a request cannot be cancelled.)
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[cfg_attr(test, derive(JsonSchema))]
#[serde(untagged)]
pub enum Id {
    Number(serde_json::Number),
    String(String),
}

impl From<u64> for Id {
    fn from(n: u64) -> Id {
        Id::Number(n.into())
    }
}

impl From<&str> for Id {
    fn from(s: &str) -> Id {
        Id::String(s.to_string())
    }
}

impl fmt::Display for Id {
    /// As JSON: `7`, `"x"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Id::Number(n) => write!(f, "{n}"),
            Id::String(s) => write!(f, "{}", serde_json::Value::from(s.as_str())),
        }
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Id, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Id;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number or a string")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Id, E> {
                Ok(Id::Number(n.into()))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Id, E> {
                Ok(Id::Number(n.into()))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Id, E> {
                serde_json::Number::from_f64(n)
                    .map(Id::Number)
                    .ok_or_else(|| E::invalid_value(de::Unexpected::Float(n), &self))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Id, E> {
                Ok(Id::String(s.to_string()))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Id, E> {
                Ok(Id::String(s))
            }
        }
        d.deserialize_any(V)
    }
}

/// A request (client to server). Without an id it is a notification: the server
/// runs it and answers nothing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request<P = serde_json::Value> {
    pub jsonrpc: Version,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Id>,
    pub method: Cow<'static, str>,
    pub params: P,
}

impl<P> Request<P> {
    pub fn new(id: impl Into<Id>, method: impl Into<Cow<'static, str>>, params: P) -> Self {
        Request {
            jsonrpc: Version,
            id: Some(id.into()),
            method: method.into(),
            params,
        }
    }
}

/// A notification (server to client).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Notification<P = serde_json::Value> {
    pub jsonrpc: Version,
    pub method: Cow<'static, str>,
    pub params: P,
}

impl<P> Notification<P> {
    pub fn new(method: &'static str, params: P) -> Self {
        Notification {
            jsonrpc: Version,
            method: method.into(),
            params,
        }
    }
}

/// A response: `result` or `error`. `id` is null when the request's could not be
/// read (a parse error, an invalid request).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response<R = serde_json::Value> {
    pub jsonrpc: Version,
    #[serde(default)]
    pub id: Option<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<R>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorObject>,
}

impl<R> Response<R> {
    pub fn ok(id: Option<Id>, result: R) -> Self {
        Response {
            jsonrpc: Version,
            id,
            result: Some(result),
            error: None,
        }
    }

    pub fn err(id: Option<Id>, error: ErrorObject) -> Self {
        Response {
            jsonrpc: Version,
            id,
            result: None,
            error: Some(error),
        }
    }

    /// The result, or the error (a response with neither is an internal error).
    pub fn into_result(self) -> Result<R, ErrorObject> {
        match (self.result, self.error) {
            (_, Some(e)) => Err(e),
            (Some(r), None) => Ok(r),
            (None, None) => Err(ErrorObject {
                code: ErrorCode::InternalError.code(),
                message: "a response with neither result nor error".into(),
                data: None,
            }),
        }
    }
}

/// Any line the server sends, its payload still JSON.
#[derive(Debug, Clone)]
pub enum Message {
    Notification(Notification),
    Response(Response),
}

impl Message {
    pub fn parse(line: &str) -> serde_json::Result<Message> {
        #[derive(Deserialize)]
        struct Any {
            jsonrpc: Version,
            #[serde(default)]
            id: Option<Id>,
            method: Option<Cow<'static, str>>,
            #[serde(default)]
            params: serde_json::Value,
            result: Option<serde_json::Value>,
            error: Option<ErrorObject>,
        }
        let any: Any = serde_json::from_str(line)?;
        Ok(match any.method {
            Some(method) => Message::Notification(Notification {
                jsonrpc: any.jsonrpc,
                method,
                params: any.params,
            }),
            None => Message::Response(Response {
                jsonrpc: any.jsonrpc,
                id: any.id,
                result: any.result,
                error: any.error,
            }),
        })
    }
}

// ---------------------------------------------------------------------------
// Errors

/// The codes of the error object (docs/serve.md, "Errors").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The line is not JSON.
    ParseError,
    /// Not a valid JSON-RPC request.
    InvalidRequest,
    /// No such method.
    MethodNotFound,
    /// A parameter is missing or wrong (`data.param` names it).
    InvalidParams,
    /// A fault of the server.
    InternalError,
    /// Denied by the policy (`data`: path, rule, origin).
    Denied,
    /// Not found (`data`: path).
    NotFound,
    /// An I/O or other OS error (`data`: path, errno).
    OsError,
    /// Cancelled.
    Cancelled,
    /// Timed out (not `exec`, which reports its timeout in its result).
    TimedOut,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 10] = [
        ErrorCode::ParseError,
        ErrorCode::InvalidRequest,
        ErrorCode::MethodNotFound,
        ErrorCode::InvalidParams,
        ErrorCode::InternalError,
        ErrorCode::Denied,
        ErrorCode::NotFound,
        ErrorCode::OsError,
        ErrorCode::Cancelled,
        ErrorCode::TimedOut,
    ];

    pub const fn code(self) -> i64 {
        match self {
            ErrorCode::ParseError => -32700,
            ErrorCode::InvalidRequest => -32600,
            ErrorCode::MethodNotFound => -32601,
            ErrorCode::InvalidParams => -32602,
            ErrorCode::InternalError => -32603,
            ErrorCode::Denied => 1,
            ErrorCode::NotFound => 2,
            ErrorCode::OsError => 3,
            ErrorCode::Cancelled => 4,
            ErrorCode::TimedOut => 5,
        }
    }

    pub fn from_code(code: i64) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.code() == code)
    }
}

/// A failed request's error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(JsonSchema))]
pub struct ErrorObject {
    /// One of [`ErrorCode`].
    pub code: i64,
    /// A full sentence for a human, starting with what failed.
    pub message: String,
    // Boxed: an error is passed around far more often than it has data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Box<ErrorData>>,
}

impl fmt::Display for ErrorObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (error {})", self.message, self.code)
    }
}

impl std::error::Error for ErrorObject {}

/// What an error is about, as its code says.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(JsonSchema))]
pub struct ErrorData {
    /// The parameter (error -32602).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    /// The path (errors 1, 2, 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The rule that refused it, e.g. `deny /home/u/.ssh` (error 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Where the rule comes from, e.g. `built-in default` (error 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// The errno's name, e.g. `EISDIR` (error 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<String>,
}

// ---------------------------------------------------------------------------
// Values

/// Bytes, as standard base64 on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Base64<'a>(pub Cow<'a, [u8]>);

impl Base64<'_> {
    pub fn into_vec(self) -> Vec<u8> {
        self.0.into_owned()
    }
}

impl From<Vec<u8>> for Base64<'static> {
    fn from(v: Vec<u8>) -> Self {
        Base64(Cow::Owned(v))
    }
}

impl<'a> From<&'a [u8]> for Base64<'a> {
    fn from(v: &'a [u8]) -> Self {
        Base64(Cow::Borrowed(v))
    }
}

impl Serialize for Base64<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use base64::Engine as _;
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

/// Decoded into bytes of its own, whatever the lifetime.
impl<'de> Deserialize<'de> for Base64<'_> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use base64::Engine as _;
        let text = Cow::<str>::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map(Base64::from)
            .map_err(|e| de::Error::custom(format!("is not valid base64 ({e})")))
    }
}

#[cfg(test)]
impl JsonSchema for Base64<'_> {
    fn schema_name() -> Cow<'static, str> {
        "Base64".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "Bytes, as standard base64.",
            "contentEncoding": "base64",
        })
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// No params, or no result: `{}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(JsonSchema))]
pub struct Empty {}

/// A path: absolute, or relative to the workspace. The client resolves `~` and `@`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(JsonSchema))]
pub struct PathParams {
    pub path: String,
}

// ---------------------------------------------------------------------------
// Notifications

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(JsonSchema))]
pub struct Ready {
    /// cordon's version.
    pub version: String,
    /// The backend the session runs in (`os`).
    pub backend: String,
    /// The workspace, where relative paths and `exec` start.
    pub workspace: String,
}

/// Which output of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(test, derive(JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(JsonSchema))]
pub struct ExecOutput<'a> {
    /// The `exec` request's id.
    pub id: Option<Id>,
    pub stream: Stream,
    /// The bytes, in order per stream.
    pub data: Base64<'a>,
}

// ---------------------------------------------------------------------------
// Params and results

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(JsonSchema))]
pub struct ExecParams {
    /// The command line, run by `/bin/bash -c` (else `/bin/sh -c`).
    pub command: String,
    /// Where it starts (default: the workspace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Variables added to the sandbox's environment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Seconds; on expiry the command's process group is killed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
    /// The command's stdin (default: empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ExecResult {
    /// The exit status, or null when a signal ended it.
    pub exit_code: Option<i32>,
    /// The signal that ended it (`SIGKILL`), or null.
    pub signal: Option<String>,
    pub timed_out: bool,
    pub cancelled: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(JsonSchema))]
pub struct CancelParams {
    /// The id of a pending request.
    pub id: Id,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(JsonSchema))]
pub struct CancelResult {
    /// False when no such request was pending.
    pub cancelled: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(JsonSchema))]
pub struct ReadParams {
    pub path: String,
    /// Bytes to skip (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Bytes to read at most (default: to the end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(JsonSchema))]
pub struct ReadResult {
    pub data: Base64<'static>,
    /// The whole file's size.
    pub size: u64,
    /// `image/png`, `image/jpeg`, `image/gif` or `image/webp` for an image
    /// recognised by its magic bytes, else null.
    pub mime: Option<Cow<'static, str>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(JsonSchema))]
pub struct WriteParams {
    pub path: String,
    /// The content as UTF-8 text; or `data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// The content as base64; or `content`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Base64<'static>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(JsonSchema))]
pub struct WriteResult {
    /// Bytes written.
    pub bytes: u64,
}

/// A file's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum FileType {
    File,
    Dir,
    Symlink,
    Other,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct StatResult {
    #[serde(rename = "type")]
    pub kind: FileType,
    pub size: u64,
    pub mtime_ms: i64,
    pub mode: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(JsonSchema))]
pub struct ExistsResult {
    pub exists: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(JsonSchema))]
pub struct DirEntry {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: FileType,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(JsonSchema))]
pub struct ReaddirResult {
    pub entries: Vec<DirEntry>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(JsonSchema))]
pub struct MkdirParams {
    pub path: String,
    /// Create missing parents too (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recursive: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(JsonSchema))]
pub struct FindParams {
    /// A glob on the path relative to `path` (`**/*.rs`); without `/` it matches
    /// file names at any depth.
    pub pattern: String,
    /// Where to look (default: the workspace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Most paths returned (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// Include hidden files (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden: Option<bool>,
    /// Honour .gitignore, .ignore and git's excludes (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gitignore: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(JsonSchema))]
pub struct FindResult {
    /// Relative to `path`, sorted.
    pub paths: Vec<String>,
    /// More paths matched than `limit`.
    pub truncated: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct GrepParams {
    /// A regular expression (Rust regex syntax, as rg), or a literal.
    pub pattern: String,
    /// A file or a directory (default: the workspace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `pattern` is a literal string (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub literal: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_case: Option<bool>,
    /// A glob that file paths must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub glob: Option<String>,
    /// Lines before and after each match (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<u64>,
    /// Most matches returned (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// Include hidden files (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden: Option<bool>,
    /// Honour .gitignore, .ignore and git's excludes (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gitignore: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(JsonSchema))]
pub struct GrepMatch {
    /// Relative to `path` when it is a directory.
    pub path: String,
    pub line: u64,
    pub text: String,
    /// A context line, not a match.
    #[serde(default, skip_serializing_if = "is_false")]
    pub context: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(JsonSchema))]
pub struct GrepResult {
    pub matches: Vec<GrepMatch>,
    /// More matches than `limit`.
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(JsonSchema))]
pub struct StatusResult {
    /// The backend the session runs in (`os`).
    pub backend: String,
    /// The isolation layers in force, as the backend reports them.
    pub layers: serde_json::Value,
    pub policy: StatusPolicy,
    /// Recent denials, oldest first: the agent's file operations and the egress
    /// broker's refusals.
    pub denials: Vec<Denial>,
}

/// The network mode: `none`, `host` or `allowlist`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Net {
    None,
    Host,
    Allowlist,
}

impl From<cordon_policy::NetMode> for Net {
    fn from(m: cordon_policy::NetMode) -> Net {
        match m {
            cordon_policy::NetMode::None => Net::None,
            cordon_policy::NetMode::Host => Net::Host,
            cordon_policy::NetMode::Allowlist => Net::Allowlist,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct StatusPolicy {
    pub workspace: String,
    pub net: Net,
    /// The allow rules in force.
    pub allow_domains: Vec<AllowedDomain>,
    /// The writable roots, the scratch dirs and read-write mount targets.
    pub writable: Vec<String>,
    /// Every path the policy hides.
    pub denied: Vec<String>,
    /// The workspace is not writable.
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(JsonSchema))]
pub struct AllowedDomain {
    pub domain: String,
    /// The preset the rule comes from, if any.
    #[serde(default)]
    pub preset: Option<String>,
    /// Who allowed it (`this session: ...` for one added by `allowDomain`).
    pub origin: String,
}

impl From<&cordon_policy::DomainRule> for AllowedDomain {
    fn from(rule: &cordon_policy::DomainRule) -> AllowedDomain {
        AllowedDomain {
            domain: rule.pattern.to_string(),
            preset: rule.preset.clone(),
            origin: rule.origin.to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(JsonSchema))]
pub struct Denial {
    /// UTC, RFC 3339.
    pub time: String,
    /// The operation (`read`, ...), or `network` for the broker's.
    pub op: String,
    /// The path, or `host:port` (or the name a DNS question asked for).
    pub path: String,
    /// The rule, or the broker's reason.
    pub rule: String,
}

impl Denial {
    /// A denial at `time`, which is written as UTC, RFC 3339, to the millisecond
    /// (`2024-05-01T12:34:56.789Z`; a time before 1970 as 1970's first instant).
    pub fn at(time: SystemTime, op: String, path: String, rule: String) -> Denial {
        let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
        Denial {
            time: rfc3339(since),
            op,
            path,
            rule,
        }
    }
}

/// A time since the Unix epoch, as `2024-05-01T12:34:56.789Z`.
fn rfc3339(d: Duration) -> String {
    let secs = d.as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, dd) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(JsonSchema))]
pub struct AllowDomainParams {
    /// `example.com`, `*.example.com`, optionally `:PORT`.
    pub domain: String,
    /// Who asked (one line of at most 200 characters is kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(JsonSchema))]
pub struct AllowDomainResult {
    /// The pattern now allowed.
    pub allowed: String,
}
