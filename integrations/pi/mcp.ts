/**
 * MCP servers in the sandbox (pi 1.x). pi's built-in MCP support starts every stdio
 * server of `mcp.json` (and of `pi.registerMcpServer`) as a process on the host. This
 * extension takes MCP over (pi's `createMcpExtension`, which registers `/mcp` and so
 * replaces the built-in one) with a transport of its own:
 *
 * - a stdio server runs in a cordon sandbox of its own, `cordon run` with the
 *   session's sandbox options (workspace, config, read-only, hidden paths): its
 *   stdin and stdout are the JSON-RPC transport, relayed by cordon. Its `env` is
 *   passed in by name (`--env NAME`), after pi's `${NAME}` interpolation; a `!command`
 *   value is refused (cordon runs nothing of pi's on the host).
 * - an HTTP server is refused: pi would connect to it from the host, past the
 *   sandbox's egress broker. The error names the fix (a stdio bridge run inside).
 *
 * Fail closed: when cordon is missing, the server fails with the reason; nothing
 * falls back to the host.
 */

import { type ChildProcess, spawn } from "node:child_process";
import os from "node:os";
import path from "node:path";
import { CordonUnavailable, cordonEnv } from "./client.ts";

/** What pi's MCP client needs of a transport (`McpTransport` of @earendil-works/pi-mcp). */
export interface McpTransportLike {
	start(): Promise<void>;
	send(message: unknown, options?: { signal?: AbortSignal }): Promise<void>;
	close(): Promise<void>;
	onMessage(listener: (message: any) => void): () => void;
	onError(listener: (error: Error) => void): () => void;
	onClose(listener: () => void): () => void;
}

/** An `mcpServers` entry as pi hands it to a transport factory. */
export interface McpEntryLike {
	name: string;
	config: {
		command?: string;
		args?: string[];
		env?: Record<string, string>;
		cwd?: string;
		url?: string;
	};
}

const STDERR_TAIL = 2000;
const CLOSE_GRACE_MS = 500;
const KILL_AFTER_MS = 2000;

/** pi's `~`/`~/…` expansion of a stdio server's command, args and cwd. */
function expandHome(value: string): string {
	if (value === "~") return os.homedir();
	if (value.startsWith("~/")) return path.join(os.homedir(), value.slice(2));
	return value;
}

/** A value of an MCP server's `env`, interpolated as pi does (`$NAME`, `${NAME}`,
 * `$$`, `$!`); `!command` is refused. */
export function resolveEnvValue(server: string, key: string, value: string, env = process.env): string {
	if (value.startsWith("!")) {
		throw new CordonUnavailable(
			`cordon: MCP server "${server}": env ${key} is a command (${JSON.stringify(value)}), which cordon does not run on the host, so the server is not started. Fix: put the value in an environment variable and write "\${NAME}".`,
		);
	}
	let out = "";
	for (let i = 0; i < value.length; ) {
		const c = value[i];
		if (c !== "$") {
			out += c;
			i++;
			continue;
		}
		const next = value[i + 1];
		if (next === "$" || next === "!") {
			out += next;
			i += 2;
			continue;
		}
		let name: string | undefined;
		let end = i + 1;
		if (next === "{") {
			const close = value.indexOf("}", i + 2);
			if (close < 0) {
				out += "$";
				i++;
				continue;
			}
			const inner = value.slice(i + 2, close);
			end = close + 1;
			if (/^[A-Za-z_][A-Za-z0-9_]*$/.test(inner)) name = inner;
			else {
				out += value.slice(i, end);
				i = end;
				continue;
			}
		} else {
			const m = /^[A-Za-z_][A-Za-z0-9_]*/.exec(value.slice(i + 1));
			if (!m) {
				out += "$";
				i++;
				continue;
			}
			name = m[0];
			end = i + 1 + name.length;
		}
		const v = env[name];
		if (!v) {
			throw new CordonUnavailable(
				`cordon: MCP server "${server}": env ${key} names the environment variable ${name}, which is not set.`,
			);
		}
		out += v;
		i = end;
	}
	return out;
}

/** A stdio MCP server inside its own cordon sandbox: `cordon run OPTIONS --env K... -- COMMAND ARGS`. */
export class SandboxedStdioTransport implements McpTransportLike {
	private child: ChildProcess | undefined;
	private messageListeners = new Set<(m: any) => void>();
	private errorListeners = new Set<(e: Error) => void>();
	private closeListeners = new Set<() => void>();
	private closeEmitted = false;
	private closed = false;
	private buf = "";
	/** The server's (and cordon's) last stderr, for error messages. */
	stderr = "";

	constructor(
		private readonly bin: string,
		private readonly argv: string[],
		private readonly cwd: string,
		private readonly env: NodeJS.ProcessEnv,
	) {}

	onMessage(l: (m: any) => void) {
		this.messageListeners.add(l);
		return () => this.messageListeners.delete(l);
	}
	onError(l: (e: Error) => void) {
		this.errorListeners.add(l);
		return () => this.errorListeners.delete(l);
	}
	onClose(l: () => void) {
		this.closeListeners.add(l);
		return () => this.closeListeners.delete(l);
	}
	private emitError(e: unknown) {
		const err = e instanceof Error ? e : new Error(String(e));
		for (const l of this.errorListeners) l(err);
	}
	private emitClose() {
		if (this.closeEmitted) return;
		this.closeEmitted = true;
		for (const l of this.closeListeners) l();
	}

	async start(): Promise<void> {
		if (this.child || this.closed) throw new Error("MCP transport already started or closed");
		const child = spawn(this.bin, this.argv, {
			cwd: this.cwd,
			env: this.env,
			stdio: ["pipe", "pipe", "pipe"],
			// Own process group: close() ends cordon and what it started.
			detached: true,
		});
		this.child = child;
		child.stdout?.setEncoding("utf8");
		child.stdout?.on("data", (chunk: string) => this.onStdout(chunk));
		child.stderr?.setEncoding("utf8");
		child.stderr?.on("data", (chunk: string) => {
			this.stderr = (this.stderr + chunk).slice(-STDERR_TAIL);
		});
		child.stdin?.on("error", (e) => {
			if (!this.closed) this.emitError(e);
		});
		child.on("close", () => {
			this.child = undefined;
			this.emitClose();
		});
		await new Promise<void>((resolve, reject) => {
			child.once("spawn", () => resolve());
			child.once("error", (e) => reject(new CordonUnavailable(`cordon: could not start ${this.bin}: ${e.message}`)));
		});
		child.on("error", (e) => {
			if (!this.closed) this.emitError(e);
		});
	}

	private onStdout(chunk: string) {
		this.buf += chunk;
		for (;;) {
			const nl = this.buf.indexOf("\n");
			if (nl < 0) break;
			const line = this.buf.slice(0, nl).replace(/\r$/, "");
			this.buf = this.buf.slice(nl + 1);
			if (!line.trim()) continue;
			let msg: unknown;
			try {
				msg = JSON.parse(line);
			} catch {
				this.emitError(new Error(`MCP server sent a line that is not JSON: ${line.slice(0, 200)}`));
				continue;
			}
			for (const l of this.messageListeners) l(msg);
		}
	}

	async send(message: unknown): Promise<void> {
		const stdin = this.child?.stdin;
		if (this.closed || !stdin?.writable) {
			throw new Error(`the MCP server's sandbox has ended${this.stderr ? ` (cordon said: ${this.stderr.trim()})` : ""}`);
		}
		await new Promise<void>((resolve, reject) => {
			stdin.write(`${JSON.stringify(message)}\n`, (e) => (e ? reject(e) : resolve()));
		});
	}

	async close(): Promise<void> {
		if (this.closed) return;
		this.closed = true;
		const child = this.child;
		if (!child) {
			this.emitClose();
			return;
		}
		const kill = (signal: NodeJS.Signals) => {
			try {
				if (child.pid !== undefined) process.kill(-child.pid, signal);
			} catch {
				try {
					child.kill(signal);
				} catch {
					/* gone */
				}
			}
		};
		await new Promise<void>((resolve) => {
			const timers = [
				setTimeout(() => kill("SIGTERM"), CLOSE_GRACE_MS),
				setTimeout(() => kill("SIGKILL"), CLOSE_GRACE_MS + KILL_AFTER_MS),
			];
			child.once("close", () => {
				for (const t of timers) clearTimeout(t);
				resolve();
			});
			child.stdin?.end();
		});
	}
}

/**
 * The transport factory for pi's `createMcpExtension`: every stdio server in a
 * cordon sandbox, every HTTP server refused. `sandboxArgs` are the session's
 * `cordon` options; `findBin` finds cordon or throws `CordonUnavailable`.
 */
export function sandboxedMcpTransport(
	findBin: () => string,
	sandboxArgs: () => string[],
): (entry: McpEntryLike, cwd: string) => McpTransportLike {
	return (entry, cwd) => {
		const { config, name } = entry;
		if (typeof config.url === "string" || typeof config.command !== "string") {
			throw new CordonUnavailable(
				`cordon: MCP server "${name}" is a remote (HTTP) server; pi would connect to it from the host, past the sandbox's network rules, so cordon does not connect it. Fix: reach it through a stdio bridge that runs inside the sandbox, e.g. {"command": "npx", "args": ["-y", "mcp-remote", ${JSON.stringify(config.url ?? "URL")}]}, and allow its host in your cordon config ("allow_domain").`,
			);
		}
		const bin = findBin();
		const env = cordonEnv();
		const argv = ["run", ...sandboxArgs()];
		for (const [key, value] of Object.entries(config.env ?? {})) {
			if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) {
				throw new CordonUnavailable(`cordon: MCP server "${name}": env ${JSON.stringify(key)} is not a variable name.`);
			}
			env[key] = resolveEnvValue(name, key, String(value));
			argv.push("--env", key);
		}
		argv.push("--", expandHome(config.command), ...(config.args ?? []).map((a) => expandHome(String(a))));
		const dir = path.resolve(cwd, expandHome(config.cwd ?? "."));
		return new SandboxedStdioTransport(bin, argv, dir, env);
	};
}
