/**
 * cordon for pi: every tool pi offers the model (read, write, edit, bash, ls, find,
 * grep) and the user's own `!` commands run inside one cordon sandbox, served by
 * `cordon serve` (docs/serve.md) for the whole pi session.
 *
 * - read, write, edit, bash, ls and find are pi's own tools built with operations
 *   that call the server, so pi's prompts, rendering and truncation stay pi's; find
 *   uses the server's `find` as its glob (pi's fd is never run).
 * - grep is replaced wholesale (pi's grep always runs the host's rg): its execute calls
 *   the server's `grep` and formats the result as pi's grep does.
 * - pi's config dir (`$PI_CODING_AGENT_DIR`, else ~/.pi/agent): its credential files
 *   are hidden from the sandbox, the whole dir when it lies in the workspace.
 * - MCP (pi 1.x): pi's own MCP support with a transport of ours (mcp.ts), which
 *   replaces the built-in one: stdio servers run in a cordon sandbox, HTTP servers
 *   are refused.
 * - Fail closed: when cordon is missing, cannot start or dies, every tool call fails
 *   with a message saying why and how to fix it, and the user's `!` commands print
 *   that message. Nothing ever runs on the host; the `user_bash` handler never throws.
 *
 * Flags: --sandbox-config FILE (cordon's config, instead of
 * ~/.config/cordon/config.json), --sandbox-read-only (the workspace is read-only too).
 * Commands: /sandbox-status, /sandbox-allow-domain DOMAIN.
 */

import { realpathSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as piPackage from "@earendil-works/pi-coding-agent";
import type {
	BashOperations,
	EditOperations,
	ExtensionAPI,
	ExtensionContext,
	FindOperations,
	GrepToolDetails,
	LsOperations,
	ReadOperations,
	WriteOperations,
} from "@earendil-works/pi-coding-agent";
import {
	createBashToolDefinition,
	createEditToolDefinition,
	createFindToolDefinition,
	createGrepToolDefinition,
	createLsToolDefinition,
	createReadToolDefinition,
	createWriteToolDefinition,
	DEFAULT_MAX_BYTES,
	formatSize,
	truncateHead,
	truncateLine,
} from "@earendil-works/pi-coding-agent";
import {
	CordonClient,
	CordonError,
	CordonUnavailable,
	ERR_CANCELLED,
	ERR_METHOD_NOT_FOUND,
	ERR_NOT_FOUND,
	findCordon,
} from "./client.ts";
import type { AllowedDomain, Method, Methods, StatusPolicy, StatusResult } from "./protocol.ts";
import { sandboxedMcpTransport } from "./mcp.ts";

const GREP_DEFAULT_LIMIT = 100;
const GREP_MAX_LINE_LENGTH = 500;

/** Where this extension's files are: the agent must not be able to change them. */
const EXTENSION_DIR = (() => {
	try {
		return path.dirname(fileURLToPath(import.meta.url));
	} catch {
		return undefined;
	}
})();

/** Resolves a tool's path argument as pi does (strip `@`, expand `~`, relative to cwd). */
export function resolveToolPath(input: string | undefined, cwd: string): string {
	let p = (input ?? ".").replace(/[\u00A0\u2000-\u200A\u202F\u205F\u3000]/g, " ");
	if (p.startsWith("@")) p = p.slice(1);
	if (p === "~") p = os.homedir();
	else if (p.startsWith("~/")) p = path.join(os.homedir(), p.slice(2));
	if (p.startsWith("file://")) p = fileURLToPath(p);
	return path.isAbsolute(p) ? path.resolve(p) : path.resolve(cwd, p);
}

function isInside(root: string, p: string): boolean {
	const rel = path.relative(root, p);
	return rel === "" || (!rel.startsWith("..") && !path.isAbsolute(rel));
}

function enoent(p: string): Error {
	const e = new Error(`ENOENT: no such file or directory: ${p}`) as NodeJS.ErrnoException;
	e.code = "ENOENT";
	return e;
}

const SIGNALS = os.constants.signals as Record<string, number>;

/** The files of pi's config dir that hold credentials: never readable inside. */
const AGENT_SECRETS = ["auth.json", "models.json", "mcp.json", "mcp-auth.json"];

/** The config dir pi uses: `$PI_CODING_AGENT_DIR` (`~` expanded), else `~/.pi/agent`,
 * as pi's own `getAgentDir` says, made absolute. */
export function piAgentDir(): string {
	const get = (piPackage as { getAgentDir?: () => string }).getAgentDir;
	let dir: string | undefined;
	try {
		dir = typeof get === "function" ? get() : undefined;
	} catch {
		dir = undefined;
	}
	if (!dir) {
		const env = process.env.PI_CODING_AGENT_DIR;
		dir = env ? resolveToolPath(env, process.cwd()) : path.join(os.homedir(), ".pi", "agent");
	}
	return path.resolve(dir);
}

/** `cordon` options hiding pi's config dir from the sandbox: its credential files
 * (in the dir pi uses, and in the default one), and the whole dir when it lies in
 * the workspace (where the agent could change what pi loads on the host). */
export function agentDirArgs(workspace: string, agentDir = piAgentDir()): string[] {
	const dirs = new Set([agentDir, path.join(os.homedir(), ".pi", "agent")]);
	for (const d of [...dirs]) {
		try {
			dirs.add(realpathSync(d));
		} catch {
			/* not there (yet): the path itself is denied */
		}
	}
	const args: string[] = [];
	for (const d of dirs) {
		if (isInside(workspace, d)) args.push("--deny-read", d);
		else for (const f of AGENT_SECRETS) args.push("--deny-read", path.join(d, f));
	}
	return args;
}

/** The backends `--sandbox-backend` takes (cordon's `--backend`). */
const BACKENDS = ["os", "vm"];

/** `cordon` options for `--sandbox-backend`: none when unset (cordon's own
 * default: `$CORDON_BACKEND`, else the user config's "backend", else os).
 * Throws `CordonUnavailable` for a name cordon has no backend for. */
export function backendArgs(flag: unknown): string[] {
	if (flag === undefined || flag === "") return [];
	if (typeof flag === "string" && BACKENDS.includes(flag)) return ["--backend", flag];
	throw new CordonUnavailable(
		`cordon sandbox unavailable: --sandbox-backend ${String(flag)} is no backend of cordon's. Fix: say ${BACKENDS.join(" or ")} (vm runs the tools in a QEMU VM with the same policy; \`cordon doctor\` says whether it can run here).`,
	);
}

export default async function cordonExtension(pi: ExtensionAPI) {
	const startCwd = process.cwd();

	pi.registerFlag("sandbox-config", {
		description: "cordon config file for this session (instead of ~/.config/cordon/config.json)",
		type: "string",
	});
	pi.registerFlag("sandbox-read-only", {
		description: "Make the workspace read-only too inside the cordon sandbox",
		type: "boolean",
		default: false,
	});
	pi.registerFlag("sandbox-backend", {
		description:
			"Where cordon runs the tools: os (Linux namespaces, the default) or vm (a QEMU VM with the same policy); default $CORDON_BACKEND, else os",
		type: "string",
	});

	let client: CordonClient | undefined;
	let startError: CordonUnavailable | undefined;
	let workspace = startCwd;
	const warnings: string[] = [];

	/** The sandbox options of this session for workspace `cwd` (`cordon serve` and
	 * `cordon run` take the same). Throws `CordonUnavailable` when they cannot be
	 * safe. */
	function sandboxArgs(cwd: string): string[] {
		const args = ["--workspace", cwd];
		const config = pi.getFlag("sandbox-config");
		if (typeof config === "string" && config !== "") {
			const abs = resolveToolPath(config, cwd);
			if (isInside(cwd, abs)) {
				throw new CordonUnavailable(
					`cordon sandbox unavailable: the sandbox config ${abs} is inside the workspace, where the agent could rewrite it for the next session. Fix: move it outside the workspace (e.g. ~/.config/cordon/) and pass that path to --sandbox-config.`,
				);
			}
			args.push("--config", abs);
		}
		if (pi.getFlag("sandbox-read-only") === true) args.push("--read-only");
		args.push(...backendArgs(pi.getFlag("sandbox-backend")));
		args.push(...agentDirArgs(cwd));
		return args;
	}

	/** Starts `cordon serve` once per session. Never throws; failures are kept in
	 * `startError` and reported by every tool call. */
	function start(cwd: string): void {
		if (client || startError) return;
		workspace = cwd;
		try {
			const bin = findCordon();
			const args = sandboxArgs(cwd);
			if (EXTENSION_DIR && isInside(cwd, EXTENSION_DIR)) {
				warnings.push(
					`the cordon extension itself (${EXTENSION_DIR}) is inside the workspace: the agent can change the code pi loads next time. Install it outside the workspace.`,
				);
			}
			client = new CordonClient(bin, args, cwd);
			client.start();
		} catch (e) {
			startError =
				e instanceof CordonUnavailable
					? e
					: new CordonUnavailable(`cordon sandbox unavailable: ${(e as Error).message}`);
		}
	}

	/** The ready server, or a `CordonUnavailable` error saying why there is none. */
	async function sandbox(cwd?: string): Promise<CordonClient> {
		if (!client && !startError) start(cwd ?? startCwd);
		if (startError) throw startError;
		const c = client!;
		await c.ready;
		return c;
	}

	async function call<M extends Method>(
		method: M,
		params: Methods[M]["params"],
		signal?: AbortSignal,
	): Promise<Methods[M]["result"]> {
		const c = await sandbox();
		return c.request(method, params, { signal });
	}

	// ---------------------------------------------------------------------------
	// Operations backed by the server
	// ---------------------------------------------------------------------------

	const access = async (p: string) => {
		const r = await call("exists", { path: p });
		if (!r.exists) throw enoent(p);
	};
	const readFile = async (p: string) => {
		const r = await call("read", { path: p });
		return Buffer.from(r.data ?? "", "base64");
	};
	const writeFile = async (p: string, content: string) => {
		await call("write", { path: p, content });
	};
	const exists = async (p: string) => (await call("exists", { path: p })).exists === true;

	const readOps: ReadOperations = {
		readFile,
		access,
		detectImageMimeType: async (p) => {
			const r = await call("read", { path: p, limit: 64 });
			return r.mime ?? null;
		},
	};
	const writeOps: WriteOperations = {
		writeFile,
		mkdir: async (dir) => {
			await call("mkdir", { path: dir, recursive: true });
		},
	};
	const editOps: EditOperations = { readFile, writeFile, access };
	// pi's ls stats every entry readdir returned; readdir already says each entry's
	// type, so those stats are answered from it (one request, not one per entry).
	const entryTypes = new Map<string, string>();
	const lsOps: LsOperations = {
		exists,
		stat: async (p) => {
			const known = entryTypes.get(p);
			const type = known ?? (await call("stat", { path: p })).type;
			return { isDirectory: () => type === "dir" };
		},
		readdir: async (p) => {
			const r = await call("readdir", { path: p });
			entryTypes.clear();
			for (const e of r.entries ?? []) entryTypes.set(path.join(p, e.name), e.type);
			return (r.entries ?? []).map((e) => e.name);
		},
	};
	const findOps: FindOperations = {
		exists,
		glob: async (pattern, cwd, options) => {
			const r = await call("find", {
				pattern,
				path: cwd,
				limit: options.limit,
				hidden: true, // as pi's fd --hidden
				gitignore: true,
			});
			return r.paths ?? [];
		},
	};

	/** bash through the server. pi's environment is not forwarded: the sandbox gets
	 * cordon's allowlist only. */
	const bashOps: BashOperations = {
		exec: async (command, cwd, { onData, signal, timeout }) => {
			const c = await sandbox();
			let r: Methods["exec"]["result"];
			try {
				r = await c.request(
					"exec",
					{ command, cwd, ...(timeout && timeout > 0 ? { timeout } : {}) },
					{ signal, onOutput: (_stream, data) => onData(data) },
				);
			} catch (e) {
				if (e instanceof CordonError && e.rpcCode === ERR_CANCELLED) throw new Error("aborted");
				throw e;
			}
			if (r.cancelled || signal?.aborted) throw new Error("aborted");
			if (r.timedOut) throw new Error(`timeout:${timeout}`);
			if (typeof r.exitCode === "number") return { exitCode: r.exitCode };
			const n = r.signal ? SIGNALS[r.signal] : undefined;
			return { exitCode: n ? 128 + n : null };
		},
	};

	/** The user's `!` commands: the same server; never throws (a throwing handler
	 * could let pi run the command on the host): a failure is printed instead. */
	const userBashOps: BashOperations = {
		exec: async (command, cwd, options) => {
			try {
				return await bashOps.exec(command, cwd, options);
			} catch (e) {
				if (options.signal?.aborted) throw e; // pi reports the cancellation itself
				const msg = e instanceof Error ? e.message : String(e);
				try {
					options.onData(Buffer.from(msg.startsWith("timeout:") ? `cordon: command timed out\n` : `${msg}\n`));
				} catch {
					/* ignore */
				}
				return { exitCode: 125 };
			}
		},
	};

	// ---------------------------------------------------------------------------
	// Tools
	// ---------------------------------------------------------------------------

	pi.registerTool(createReadToolDefinition(startCwd, { operations: readOps }));
	pi.registerTool(createWriteToolDefinition(startCwd, { operations: writeOps }));
	pi.registerTool(createEditToolDefinition(startCwd, { operations: editOps }));
	pi.registerTool(createLsToolDefinition(startCwd, { operations: lsOps }));
	pi.registerTool(createFindToolDefinition(startCwd, { operations: findOps }));
	pi.registerTool(
		createBashToolDefinition(startCwd, { operations: bashOps, exposeSessionEnvironment: false }),
	);

	const grepDef = createGrepToolDefinition(startCwd);
	pi.registerTool({
		...grepDef,
		async execute(_id, params, signal, _onUpdate, ctx) {
			const { pattern, glob, ignoreCase, literal, context, limit } = params;
			if (signal?.aborted) throw new Error("Operation aborted");
			const searchPath = resolveToolPath(params.path || ".", ctx?.cwd || startCwd);
			let isDirectory: boolean;
			try {
				const st = await call("stat", { path: searchPath }, signal);
				isDirectory = st.type === "dir";
			} catch (e) {
				if (e instanceof CordonError && e.rpcCode === ERR_NOT_FOUND) throw new Error(`Path not found: ${searchPath}`);
				throw e;
			}
			const contextValue = context && context > 0 ? context : 0;
			const effectiveLimit = Math.max(1, limit ?? GREP_DEFAULT_LIMIT);
			const r = await call(
				"grep",
				{
					pattern,
					path: searchPath,
					literal: literal === true,
					ignoreCase: ignoreCase === true,
					...(glob ? { glob } : {}),
					context: contextValue,
					limit: effectiveLimit,
					hidden: true, // as pi's rg --hidden
					gitignore: true,
				},
				signal,
			);
			const matches = r.matches ?? [];
			const matchCount = matches.filter((m) => !m.context).length;
			if (matchCount === 0) return { content: [{ type: "text", text: "No matches found" }], details: undefined };
			const display = (p: string) => (isDirectory ? p.replace(/\\/g, "/") : path.basename(searchPath));
			let linesTruncated = false;
			const lines: string[] = [];
			for (const m of matches) {
				const raw = (m.text ?? "").replace(/\r\n/g, "\n").replace(/\r/g, "").replace(/\n$/, "");
				const { text, wasTruncated } = truncateLine(raw);
				if (wasTruncated) linesTruncated = true;
				const sep = m.context ? "-" : ":";
				lines.push(`${display(m.path)}${sep}${m.line}${sep} ${text}`);
			}
			const truncation = truncateHead(lines.join("\n"), { maxLines: Number.MAX_SAFE_INTEGER });
			let output = truncation.content;
			const details: GrepToolDetails = {};
			const notices: string[] = [];
			if (r.truncated || matchCount >= effectiveLimit) {
				notices.push(
					`${effectiveLimit} matches limit reached. Use limit=${effectiveLimit * 2} for more, or refine pattern`,
				);
				details.matchLimitReached = effectiveLimit;
			}
			if (truncation.truncated) {
				notices.push(`${formatSize(DEFAULT_MAX_BYTES)} limit reached`);
				details.truncation = truncation;
			}
			if (linesTruncated) {
				notices.push(`Some lines truncated to ${GREP_MAX_LINE_LENGTH} chars. Use read tool to see full lines`);
				details.linesTruncated = true;
			}
			if (notices.length > 0) output += `\n\n[${notices.join(". ")}]`;
			return {
				content: [{ type: "text", text: output }],
				details: Object.keys(details).length > 0 ? details : undefined,
			};
		},
	});

	pi.on("user_bash", () => {
		try {
			return { operations: userBashOps };
		} catch {
			return {
				result: {
					output: "cordon: the sandbox could not take this command; nothing was run.\n",
					exitCode: 125,
					cancelled: false,
					truncated: false,
				},
			};
		}
	});

	// ---------------------------------------------------------------------------
	// MCP (pi 1.x): pi's own MCP support, with every server in a sandbox
	// ---------------------------------------------------------------------------

	// Registering it here registers `/mcp`, which makes pi leave its built-in MCP
	// support out (it would start stdio servers on the host). pi 0.87 has no MCP.
	const createMcpExtension = (piPackage as { createMcpExtension?: (o: object) => (pi: ExtensionAPI) => unknown })
		.createMcpExtension;
	const mcpReady =
		typeof createMcpExtension === "function"
			? createMcpExtension({
					createTransport: sandboxedMcpTransport(findCordon, () => sandboxArgs(workspace)),
				})(pi)
			: undefined;

	// ---------------------------------------------------------------------------
	// Session
	// ---------------------------------------------------------------------------

	pi.on("session_start", async (_event, ctx: ExtensionContext) => {
		try {
			start(ctx.cwd || startCwd);
			for (const w of warnings) ctx.ui?.notify?.(`cordon: ${w}`, "warning");
			if (startError) {
				ctx.ui?.notify?.(startError.message, "error");
				return;
			}
			client!.ready.then(
				(info) => ctx.ui?.setStatus?.("cordon", `cordon: ${info.backend ?? "sandbox"}`),
				(e: Error) => ctx.ui?.notify?.(e.message, "error"),
			);
		} catch {
			/* never let the sandbox's start-up break pi's; tools report the failure */
		}
	});

	pi.on("session_shutdown", async () => {
		const c = client;
		if (c) await c.close().catch(() => {});
	});

	pi.on("before_agent_start", async (event) => {
		const note =
			"Every tool runs inside a cordon sandbox: the workspace is writable (except .git/hooks, .git/config and .pi/), the rest of the machine is read-only, secrets such as ~/.ssh are hidden, and the network is off unless the user allowed it. A refusal from the sandbox is final: do not try to work around it.";
		return { systemPrompt: `${event.systemPrompt}\n\n${note}` };
	});

	// ---------------------------------------------------------------------------
	// Commands
	// ---------------------------------------------------------------------------

	pi.registerCommand("sandbox-status", {
		description: "Show the cordon sandbox: backend, layers, policy, recent denials",
		handler: async (_args, ctx) => {
			let text: string;
			let level: "info" | "error" = "info";
			try {
				const c = await sandbox(ctx.cwd);
				const st = await c.request("status", {});
				text = formatStatus(st, c, warnings);
			} catch (e) {
				text = (e as Error).message;
				level = "error";
			}
			say(ctx, text, level);
		},
	});

	pi.registerCommand("sandbox-allow-domain", {
		description: "Let the sandbox reach a domain for this session (asks first)",
		handler: async (args, ctx) => {
			try {
				let domain = (args ?? "").trim();
				if (!domain && ctx.hasUI) domain = ((await ctx.ui.input("Domain to allow", "example.com")) ?? "").trim();
				if (!/^(\*\.)?[A-Za-z0-9.-]+(:\d+)?$/.test(domain)) {
					say(ctx, `cordon: not a domain: ${JSON.stringify(domain)} (e.g. example.com, *.example.com, example.com:8443)`, "error");
					return;
				}
				if (!ctx.hasUI) {
					say(ctx, "cordon: /sandbox-allow-domain asks the user first, and there is no UI to ask in this mode.", "error");
					return;
				}
				const ok = await ctx.ui.confirm(
					"Allow network access?",
					`Let everything running in the sandbox reach ${domain} for the rest of this session?`,
				);
				if (!ok) {
					say(ctx, `cordon: ${domain} stays blocked.`, "info");
					return;
				}
				const c = await sandbox(ctx.cwd);
				try {
					await c.request("allowDomain", { domain, origin: ALLOW_DOMAIN_ORIGIN });
					say(ctx, `cordon: the sandbox may now reach ${domain} (this session only).`, "info");
				} catch (e) {
					if (e instanceof CordonError && e.rpcCode === ERR_METHOD_NOT_FOUND) {
						say(
							ctx,
							`cordon: this cordon cannot allow a domain during a session yet. Add "${domain}" to "allow_domain" in your cordon config (or pass a --sandbox-config that does) and restart pi.`,
							"error",
						);
					} else throw e;
				}
			} catch (e) {
				say(ctx, (e as Error).message, "error");
			}
		},
	});
	await mcpReady;
}

/** Who asked, as the audit log and `/sandbox-status` name a domain allowed here. */
const ALLOW_DOMAIN_ORIGIN = "the user agreed in pi (/sandbox-allow-domain)";

function say(ctx: ExtensionContext, text: string, level: "info" | "warning" | "error") {
	if (ctx.hasUI) ctx.ui.notify(text, level);
	else process.stderr.write(`${text}\n`);
}

function formatStatus(st: Partial<StatusResult>, c: CordonClient, warnings: string[]): string {
	const out: string[] = [];
	out.push(`cordon sandbox: ${st?.backend ?? c.info?.backend ?? "?"} backend (cordon ${c.info?.version ?? "?"}, ${c.bin})`);
	const layers = (st?.layers ?? {}) as Record<string, unknown>;
	const ls = Object.entries(layers).map(([k, v]) => `${k}=${typeof v === "boolean" ? (v ? "on" : "off") : String(v)}`);
	if (ls.length) out.push(`layers: ${ls.join(", ")}`);
	const p: Partial<StatusPolicy> = st?.policy ?? {};
	out.push(`workspace: ${p.workspace ?? c.info?.workspace ?? "?"}${p.readOnly ? " (read-only)" : ""}`);
	out.push(`network: ${p.net ?? "?"}`);
	if (p.net === "allowlist") {
		const allowed = Array.isArray(p.allowDomains) ? p.allowDomains : [];
		const shown = allowed.map((a: AllowedDomain) => {
			const from = String(a?.origin ?? "").startsWith("this session") ? " (this session)" : "";
			return `${a?.domain ?? "?"}${a?.preset ? ` (preset ${a.preset})` : ""}${from}`;
		});
		out.push(`allowed domains: ${shown.length ? shown.join(", ") : "none (/sandbox-allow-domain DOMAIN adds one)"}`);
	}
	if (Array.isArray(p.writable) && p.writable.length) out.push(`writable: ${p.writable.join(", ")}`);
	if (Array.isArray(p.denied) && p.denied.length) out.push(`denied: ${p.denied.join(", ")}`);
	const denials = Array.isArray(st?.denials) ? st.denials : [];
	if (denials.length) {
		out.push(`recent denials (${denials.length}):`);
		for (const d of denials.slice(-10)) {
			out.push(`  ${d.time ?? ""} ${d.op ?? ""} ${d.path ?? ""} — ${d.rule ?? ""}`.trimEnd());
		}
	} else out.push("recent denials: none");
	for (const w of warnings) out.push(`warning: ${w}`);
	return out.join("\n");
}
