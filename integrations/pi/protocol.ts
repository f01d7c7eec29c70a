// The protocol of `cordon serve` (docs/serve.md), for the TypeScript client.
// Generated from crates/cordon-tools/src/protocol (the types the server
// itself uses) by its tests; do not edit: change the Rust types, then run
// `CORDON_BLESS=1 cargo test -p cordon-tools --lib protocol`.

export const JSONRPC = "2.0";

/** The codes of an error object (docs/serve.md, "Errors"). */
export const ErrorCode = {
	ParseError: -32700,
	InvalidRequest: -32600,
	MethodNotFound: -32601,
	InvalidParams: -32602,
	InternalError: -32603,
	Denied: 1,
	NotFound: 2,
	OsError: 3,
	Cancelled: 4,
	TimedOut: 5,
} as const;

export interface AllowDomainParams {
	/** `example.com`, `*.example.com`, optionally `:PORT`. */
	domain: string;
	/** Who asked (one line of at most 200 characters is kept). */
	origin?: string | null;
}

export interface AllowDomainResult {
	/** The pattern now allowed. */
	allowed: string;
}

export interface AllowedDomain {
	domain: string;
	/** Who allowed it (`this session: ...` for one added by `allowDomain`). */
	origin: string;
	/** The preset the rule comes from, if any. */
	preset: string | null;
}

/** Bytes, as standard base64. */
export type Base64 = string;

export interface CancelParams {
	/** The id of a pending request. */
	id: Id;
}

export interface CancelResult {
	/** False when no such request was pending. */
	cancelled: boolean;
}

export interface Denial {
	/** The operation (`read`, ...), or `network` for the broker's. */
	op: string;
	/** The path, or `host:port` (or the name a DNS question asked for). */
	path: string;
	/** The rule, or the broker's reason. */
	rule: string;
	/** UTC, RFC 3339. */
	time: string;
}

export interface DirEntry {
	name: string;
	type: FileType;
}

/** No params, or no result: `{}`. */
export type Empty = Record<string, never>;

/** What an error is about, as its code says. */
export interface ErrorData {
	/** The errno's name, e.g. `EISDIR` (error 3). */
	errno?: string | null;
	/** Where the rule comes from, e.g. `built-in default` (error 1). */
	origin?: string | null;
	/** The parameter (error -32602). */
	param?: string | null;
	/** The path (errors 1, 2, 3). */
	path?: string | null;
	/** The rule that refused it, e.g. `deny /home/u/.ssh` (error 1). */
	rule?: string | null;
}

/** A failed request's error. */
export interface ErrorObject {
	/** One of [`ErrorCode`]. */
	code: number;
	data?: ErrorData | null;
	/** A full sentence for a human, starting with what failed. */
	message: string;
}

export interface ExecOutput {
	/** The bytes, in order per stream. */
	data: Base64;
	/** The `exec` request's id. */
	id: Id | null;
	stream: Stream;
}

export interface ExecParams {
	/** The command line, run by `/bin/bash -c` (else `/bin/sh -c`). */
	command: string;
	/** Where it starts (default: the workspace). */
	cwd?: string | null;
	/** Variables added to the sandbox's environment. */
	env?: Record<string, string>;
	/** The command's stdin (default: empty). */
	stdin?: string | null;
	/** Seconds; on expiry the command's process group is killed. */
	timeout?: number | null;
}

export interface ExecResult {
	cancelled: boolean;
	/** The exit status, or null when a signal ended it. */
	exitCode: number | null;
	/** The signal that ended it (`SIGKILL`), or null. */
	signal: string | null;
	timedOut: boolean;
}

export interface ExistsResult {
	exists: boolean;
}

/** A file's type. */
export type FileType = "file" | "dir" | "symlink" | "other";

export interface FindParams {
	/** Honour .gitignore, .ignore and git's excludes (default true). */
	gitignore?: boolean | null;
	/** Include hidden files (default false). */
	hidden?: boolean | null;
	/** Most paths returned (default 1000). */
	limit?: number | null;
	/** Where to look (default: the workspace). */
	path?: string | null;
	/**
	 * A glob on the path relative to `path` (`**\/*.rs`); without `/` it matches
	 * file names at any depth.
	 */
	pattern: string;
}

export interface FindResult {
	/** Relative to `path`, sorted. */
	paths: string[];
	/** More paths matched than `limit`. */
	truncated: boolean;
}

export interface GrepMatch {
	/** A context line, not a match. */
	context?: boolean;
	line: number;
	/** Relative to `path` when it is a directory. */
	path: string;
	text: string;
}

export interface GrepParams {
	/** Lines before and after each match (default 0). */
	context?: number | null;
	/** Honour .gitignore, .ignore and git's excludes (default true). */
	gitignore?: boolean | null;
	/** A glob that file paths must match. */
	glob?: string | null;
	/** Include hidden files (default false). */
	hidden?: boolean | null;
	ignoreCase?: boolean | null;
	/** Most matches returned (default 100). */
	limit?: number | null;
	/** `pattern` is a literal string (default false). */
	literal?: boolean | null;
	/** A file or a directory (default: the workspace). */
	path?: string | null;
	/** A regular expression (Rust regex syntax, as rg), or a literal. */
	pattern: string;
}

export interface GrepResult {
	matches: GrepMatch[];
	/** More matches than `limit`. */
	truncated: boolean;
}

/**
 * A request's id: a number or a string. (JSON-RPC also allows a null id, which
 * the server echoes; such a request cannot be cancelled.)
 */
export type Id = number | string;

export interface MkdirParams {
	path: string;
	/** Create missing parents too (default true). */
	recursive?: boolean | null;
}

/** The network mode: `none`, `host` or `allowlist`. */
export type Net = "none" | "host" | "allowlist";

/** A path: absolute, or relative to the workspace. The client resolves `~` and `@`. */
export interface PathParams {
	path: string;
}

export interface ReadParams {
	/** Bytes to read at most (default: to the end). */
	limit?: number | null;
	/** Bytes to skip (default 0). */
	offset?: number | null;
	path: string;
}

export interface ReadResult {
	data: Base64;
	/**
	 * `image/png`, `image/jpeg`, `image/gif` or `image/webp` for an image
	 * recognised by its magic bytes, else null.
	 */
	mime: string | null;
	/** The whole file's size. */
	size: number;
}

export interface ReaddirResult {
	entries: DirEntry[];
}

export interface Ready {
	/** The backend the session runs in (`os`). */
	backend: string;
	/** cordon's version. */
	version: string;
	/** The workspace, where relative paths and `exec` start. */
	workspace: string;
}

export interface StatResult {
	mode: number;
	mtimeMs: number;
	size: number;
	type: FileType;
}

export interface StatusPolicy {
	/** The allow rules in force. */
	allowDomains: AllowedDomain[];
	/** Every path the policy hides. */
	denied: string[];
	net: Net;
	/** The workspace is not writable. */
	readOnly: boolean;
	workspace: string;
	/** The writable roots, the scratch dirs and read-write mount targets. */
	writable: string[];
}

export interface StatusResult {
	/** The backend the session runs in (`os`). */
	backend: string;
	/**
	 * Recent denials, oldest first: the agent's file operations and the egress
	 * broker's refusals.
	 */
	denials: Denial[];
	/** The isolation layers in force, as the backend reports them. */
	layers: unknown;
	policy: StatusPolicy;
}

/** Which output of a command. */
export type Stream = "stdout" | "stderr";

export interface WriteParams {
	/** The content as UTF-8 text; or `data`. */
	content?: string | null;
	/** The content as base64; or `content`. */
	data?: Base64 | null;
	path: string;
}

export interface WriteResult {
	/** Bytes written. */
	bytes: number;
}

/** Every method: its params and its result. */
export interface Methods {
	exec: { params: ExecParams; result: ExecResult };
	cancel: { params: CancelParams; result: CancelResult };
	read: { params: ReadParams; result: ReadResult };
	write: { params: WriteParams; result: WriteResult };
	stat: { params: PathParams; result: StatResult };
	exists: { params: PathParams; result: ExistsResult };
	readdir: { params: PathParams; result: ReaddirResult };
	mkdir: { params: MkdirParams; result: Empty };
	find: { params: FindParams; result: FindResult };
	grep: { params: GrepParams; result: GrepResult };
	status: { params: Empty; result: StatusResult };
	allowDomain: { params: AllowDomainParams; result: AllowDomainResult };
}

export type Method = keyof Methods;

/** Every notification the server sends, and its params. */
export interface Notifications {
	ready: Ready;
	"exec.output": ExecOutput;
}
