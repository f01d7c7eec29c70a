/**
 * A client of `cordon serve` (docs/serve.md): JSON-RPC 2.0, one JSON object per line
 * on the child's stdin/stdout. The methods, their params and results are the types
 * of protocol.ts, generated from the server's own (crates/cordon-tools/src/protocol).
 *
 * Fail closed: every request made while cordon is missing, starting up and failing,
 * or dead rejects with a `CordonUnavailable` error that says why and how to fix it.
 * Nothing here ever runs anything on the host other than the cordon binary itself.
 */

import { type ChildProcess, spawn } from "node:child_process";
import { accessSync, constants, statSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import type { ErrorData, Method, Methods, Notifications, Ready } from "./protocol.ts";
import { ErrorCode, JSONRPC } from "./protocol.ts";

/** How long `cordon serve` may take to send `ready`. */
const READY_TIMEOUT_MS = 60_000;

/** The environment variables cordon itself gets: what it needs to find its config
 * and the user, nothing of pi's own (API keys and tokens stay out). cordon passes an
 * allowlist of these into the sandbox anyway. */
const ENV_ALLOW = [
	"PATH",
	"HOME",
	"USER",
	"LOGNAME",
	"SHELL",
	"LANG",
	"LANGUAGE",
	"TERM",
	"TZ",
	"TMPDIR",
	"XDG_CONFIG_HOME",
	"XDG_RUNTIME_DIR",
	"XDG_CACHE_HOME",
	"XDG_DATA_HOME",
];

const FIX_INSTALL =
	"Install the extension with `pi install npm:@cordon-sandbox/pi` (it brings cordon for Linux x64), or install cordon and put it on PATH, or set CORDON_BIN to the cordon binary, then restart pi.";

/** The npm package that carries the cordon binary for this platform, installed
 * beside this extension as an optional dependency (packaging/npm/pack.sh). */
export const PLATFORM_PACKAGE = `@cordon-sandbox/cordon-${process.platform}-${process.arch}`;

/** cordon from the platform package next to this extension: `undefined` when the
 * package is not installed (a checkout, or a platform without one). Throws
 * `CordonUnavailable` when it is installed but its binary cannot run, rather than
 * quietly taking another cordon from PATH. */
function bundledCordon(): string | undefined {
	let manifest: string;
	try {
		manifest = createRequire(import.meta.url).resolve(`${PLATFORM_PACKAGE}/package.json`);
	} catch {
		return undefined;
	}
	const bin = path.join(path.dirname(manifest), "bin", "cordon");
	if (!isExecutableFile(bin)) {
		throw new CordonUnavailable(
			`cordon sandbox unavailable: ${PLATFORM_PACKAGE} is installed (${path.dirname(manifest)}) but ${bin} is not an executable file, so no tool can run (nothing was run on this machine). Fix: reinstall the extension (pi install npm:@cordon-sandbox/pi), or set CORDON_BIN to a cordon binary, then restart pi.`,
		);
	}
	return bin;
}

/** The sandbox cannot serve: nothing ran. `message` says why and how to fix it. */
export class CordonUnavailable extends Error {
	constructor(message: string) {
		super(message);
		this.name = "CordonUnavailable";
	}
}

/** An error answered by the server (docs/serve.md, "Errors"). */
export class CordonError extends Error {
	/** The JSON-RPC error code (not `code`: pi prints a `code` as "Error code: N"). */
	rpcCode: number;
	data: ErrorData | undefined;
	constructor(rpcCode: number, message: string, data?: ErrorData) {
		super(message);
		this.name = "CordonError";
		this.rpcCode = rpcCode;
		this.data = data;
	}
}

export const ERR_DENIED = ErrorCode.Denied;
export const ERR_NOT_FOUND = ErrorCode.NotFound;
export const ERR_CANCELLED = ErrorCode.Cancelled;
export const ERR_METHOD_NOT_FOUND = ErrorCode.MethodNotFound;

/** Where the cordon binary is: $CORDON_BIN, else the one of the platform package
 * installed with this extension, else `cordon` on PATH. Throws `CordonUnavailable`
 * when there is none. Never falls back from a CORDON_BIN that is set but wrong, or
 * a platform package that is installed but broken, to another binary. */
export function findCordon(env: NodeJS.ProcessEnv = process.env): string {
	const explicit = env.CORDON_BIN;
	if (explicit !== undefined && explicit !== "") {
		if (!isExecutableFile(explicit)) {
			throw new CordonUnavailable(
				`cordon sandbox unavailable: CORDON_BIN is set to ${JSON.stringify(explicit)}, which is not an executable file, so no tool can run (nothing was run on this machine). Fix: point CORDON_BIN at the cordon binary, or unset it to use cordon from PATH, then restart pi.`,
			);
		}
		return path.resolve(explicit);
	}
	const bundled = bundledCordon();
	if (bundled) return bundled;
	for (const dir of (env.PATH ?? "").split(path.delimiter)) {
		if (!dir) continue;
		const candidate = path.join(dir, "cordon");
		if (isExecutableFile(candidate)) return candidate;
	}
	throw new CordonUnavailable(
		`cordon sandbox unavailable: the cordon binary was not found (no ${PLATFORM_PACKAGE} beside the extension, none on PATH, and CORDON_BIN is not set), so no tool can run (nothing was run on this machine). Fix: ${FIX_INSTALL}`,
	);
}

function isExecutableFile(p: string): boolean {
	try {
		if (!statSync(p).isFile()) return false;
		accessSync(p, constants.X_OK);
		return true;
	} catch {
		return false;
	}
}

export function cordonEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
	const out: NodeJS.ProcessEnv = {};
	for (const k of ENV_ALLOW) if (env[k] !== undefined) out[k] = env[k];
	for (const [k, v] of Object.entries(env)) {
		if ((k.startsWith("LC_") || (k.startsWith("CORDON_") && k !== "CORDON_BIN")) && v !== undefined) out[k] = v;
	}
	return out;
}

interface Pending {
	method: string;
	resolve: (v: any) => void;
	reject: (e: Error) => void;
	onOutput?: (stream: "stdout" | "stderr", data: Buffer) => void;
}

export interface RequestOptions {
	signal?: AbortSignal;
	/** exec only: called with each chunk of output, in order. */
	onOutput?: (stream: "stdout" | "stderr", data: Buffer) => void;
}

/** What `ready` says; empty from a server that said nothing. */
export type ReadyInfo = Partial<Ready>;

/** One `cordon serve` process and the session it holds. */
export class CordonClient {
	readonly bin: string;
	readonly args: string[];
	readonly cwd: string;
	private child: ChildProcess | undefined;
	private nextId = 1;
	private pending = new Map<number, Pending>();
	private buf = Buffer.alloc(0);
	private stderrTail = "";
	/** Set once the server can no longer serve: every request rejects with it. */
	private dead: CordonUnavailable | undefined;
	private closing = false;
	readonly ready: Promise<ReadyInfo>;
	private resolveReady!: (info: ReadyInfo) => void;
	private rejectReady!: (e: Error) => void;
	info: ReadyInfo | undefined;

	constructor(bin: string, args: string[], cwd: string) {
		this.bin = bin;
		this.args = args;
		this.cwd = cwd;
		this.ready = new Promise((resolve, reject) => {
			this.resolveReady = resolve;
			this.rejectReady = reject;
		});
		// Nobody may be waiting yet: keep an unobserved rejection from crashing pi.
		this.ready.catch(() => {});
	}

	/** Starts `cordon serve ARGS`; `ready` settles when the sandbox is up (or is not). */
	start(): void {
		let child: ChildProcess;
		try {
			child = spawn(this.bin, ["serve", ...this.args], {
				cwd: this.cwd,
				env: cordonEnv(),
				stdio: ["pipe", "pipe", "pipe"],
				detached: false,
			});
		} catch (e) {
			this.fail(`could not start ${this.bin}: ${(e as Error).message}. Fix: ${FIX_INSTALL}`);
			return;
		}
		this.child = child;
		const timer = setTimeout(() => {
			if (!this.info && !this.dead) {
				this.fail(
					`cordon serve did not report ready within ${READY_TIMEOUT_MS / 1000} s${this.stderrSuffix()}. Fix: run \`cordon doctor\` to see what the sandbox needs.`,
				);
				child.kill("SIGKILL");
			}
		}, READY_TIMEOUT_MS);
		timer.unref?.();
		child.on("error", (e: NodeJS.ErrnoException) => {
			clearTimeout(timer);
			const why = e.code === "ENOENT" ? `${this.bin} does not exist` : `${this.bin}: ${e.message}`;
			this.fail(`could not start cordon (${why}). Fix: ${FIX_INSTALL}`);
		});
		child.stdin?.on("error", () => {
			/* EPIPE after the server died: reported by the exit handler */
		});
		child.stdout?.on("data", (chunk: Buffer) => this.onStdout(chunk));
		child.stderr?.on("data", (chunk: Buffer) => {
			this.stderrTail = (this.stderrTail + chunk.toString("utf8")).slice(-4000);
		});
		// "close", not "exit": responses still in the pipe are read first.
		child.on("close", (code, signal) => {
			clearTimeout(timer);
			if (this.closing) {
				this.fail("the cordon sandbox session has ended (pi is shutting down).");
				return;
			}
			const how = signal ? `was killed by ${signal}` : `exited with status ${code}`;
			const when = this.info ? "" : " before the sandbox was ready";
			this.fail(
				`cordon serve ${how}${when}${this.stderrSuffix()}. Nothing runs outside the sandbox, so every tool fails until pi is restarted.${this.info ? "" : " Fix: run `cordon doctor`, fix what it reports, then restart pi."}`,
			);
		});
	}

	private stderrSuffix(): string {
		const t = this.stderrTail.trim();
		return t ? ` (cordon said: ${t.split("\n").slice(-6).join(" | ")})` : "";
	}

	private fail(why: string): void {
		if (this.dead) return;
		const msg = why.startsWith("cordon sandbox unavailable") ? why : `cordon sandbox unavailable: ${why}`;
		this.dead = new CordonUnavailable(msg);
		this.rejectReady(this.dead);
		for (const [, p] of this.pending) p.reject(this.dead);
		this.pending.clear();
	}

	/** Why the server cannot serve, if it cannot. */
	get unavailable(): CordonUnavailable | undefined {
		return this.dead;
	}

	private onStdout(chunk: Buffer): void {
		this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
		for (;;) {
			const nl = this.buf.indexOf(10);
			if (nl < 0) break;
			const line = this.buf.subarray(0, nl).toString("utf8").replace(/\r$/, "");
			this.buf = this.buf.subarray(nl + 1);
			if (line.trim()) this.onLine(line);
		}
	}

	private onLine(line: string): void {
		let msg: any;
		try {
			msg = JSON.parse(line);
		} catch {
			return; // not protocol: ignore (diagnostics belong on stderr)
		}
		if (msg && typeof msg.method === "string" && msg.id === undefined) {
			if (msg.method === "ready") {
				this.info = msg.params ?? {};
				this.resolveReady(this.info!);
			} else if (msg.method === "exec.output") {
				const out: Partial<Notifications["exec.output"]> = msg.params ?? {};
				const p = typeof out.id === "number" ? this.pending.get(out.id) : undefined;
				if (p?.onOutput && typeof out.data === "string") {
					p.onOutput(out.stream === "stderr" ? "stderr" : "stdout", Buffer.from(out.data, "base64"));
				}
			}
			return;
		}
		if (msg && (typeof msg.id === "number" || typeof msg.id === "string")) {
			const p = this.pending.get(msg.id);
			if (!p) return;
			this.pending.delete(msg.id);
			if (msg.error) {
				p.reject(new CordonError(msg.error.code, String(msg.error.message ?? "cordon: request failed"), msg.error.data));
			} else {
				p.resolve(msg.result);
			}
		}
	}

	private send(obj: unknown): void {
		const stdin = this.child?.stdin;
		if (!stdin || stdin.destroyed || !stdin.writable) {
			throw this.dead ?? new CordonUnavailable("cordon sandbox unavailable: the cordon serve process is gone.");
		}
		stdin.write(`${JSON.stringify(obj)}\n`);
	}

	/** Sends one request once the sandbox is ready; rejects with `CordonUnavailable`
	 * when the sandbox cannot serve, `CordonError` when the server refused. */
	async request<M extends Method>(
		method: M,
		params: Methods[M]["params"],
		opts: RequestOptions = {},
	): Promise<Methods[M]["result"]> {
		if (this.dead) throw this.dead;
		await this.ready;
		if (this.dead) throw this.dead;
		const { signal } = opts;
		if (signal?.aborted) throw new CordonError(ERR_CANCELLED, "Operation aborted");
		const id = this.nextId++;
		return new Promise<Methods[M]["result"]>((resolve, reject) => {
			const onAbort = () => {
				try {
					const cancel: Methods["cancel"]["params"] = { id };
					this.send({ jsonrpc: JSONRPC, id: this.nextId++, method: "cancel", params: cancel });
				} catch {
					/* dead: the pending request is rejected anyway */
				}
			};
			const cleanup = () => signal?.removeEventListener("abort", onAbort);
			this.pending.set(id, {
				method,
				resolve: (v) => {
					cleanup();
					resolve(v);
				},
				reject: (e) => {
					cleanup();
					reject(e);
				},
				onOutput: opts.onOutput,
			});
			signal?.addEventListener("abort", onAbort, { once: true });
			try {
				this.send({ jsonrpc: JSONRPC, id, method, params });
			} catch (e) {
				this.pending.delete(id);
				cleanup();
				reject(e);
			}
		});
	}

	/** Ends the session: closes stdin (the server ends every sandboxed process), then
	 * kills the server if it lingers. */
	async close(graceMs = 3000): Promise<void> {
		const child = this.child;
		this.closing = true;
		if (!child || child.exitCode !== null || child.signalCode !== null) {
			this.fail("the cordon sandbox session has ended.");
			return;
		}
		await new Promise<void>((resolve) => {
			const t = setTimeout(() => {
				child.kill("SIGKILL");
				resolve();
			}, graceMs);
			child.once("close", () => {
				clearTimeout(t);
				resolve();
			});
			child.stdin?.end();
		});
		this.fail("the cordon sandbox session has ended.");
	}
}
