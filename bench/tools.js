// bench/tools: pi's local tool operations, timed in-process.
//
// pi's read, write, edit and ls tools run Node's fs/promises in pi's own process
// (dist/core/tools/{read,write,edit,ls}.js of @earendil-works/pi-coding-agent); this
// script does the same calls, in the same order, and times each one with
// process.hrtime. The driver (bench/src/bin/tools.rs) embeds it, runs it with
// `node -e`, and sends one request per line:
//
//   {"op": "read" | "write" | "edit" | "readdir" | "ls", ...arguments}
//
// and gets back one line per request: {"ns": time of the operation, "n": a count
// to check the result by} or {"error": message}. Requests are handled one at a
// time, so the driver can interleave them with the server's.
"use strict";
const fsp = require("node:fs/promises");
const path = require("node:path");
const readline = require("node:readline");

const ops = {
	// pi's read: readFile(path), the whole file.
	async read(a) {
		const buffer = await fsp.readFile(a.path);
		return buffer.length;
	},
	// pi's write: writeFile(path, content, "utf-8") (after a mkdir of the parent,
	// left out here as it is on the server's side).
	async write(a) {
		await fsp.writeFile(a.path, a.content, "utf-8");
		return Buffer.byteLength(a.content);
	},
	// pi's edit: access, readFile, replace, writeFile.
	async edit(a) {
		await fsp.access(a.path);
		const text = (await fsp.readFile(a.path)).toString("utf-8");
		if (!text.includes(a.old)) throw new Error(`edit: ${JSON.stringify(a.old)} not found in ${a.path}`);
		const out = text.replace(a.old, a.new);
		await fsp.writeFile(a.path, out, "utf-8");
		return Buffer.byteLength(out);
	},
	// One readdir with types: what the server's readdir returns.
	async readdir(a) {
		const entries = await fsp.readdir(a.path, { withFileTypes: true });
		return entries.length;
	},
	// pi's ls: exists (access), stat, readdir, then a stat per entry for the '/'.
	async ls(a) {
		await fsp.access(a.path);
		const st = await fsp.stat(a.path);
		if (!st.isDirectory()) throw new Error(`ls: not a directory: ${a.path}`);
		const entries = await fsp.readdir(a.path);
		entries.sort((x, y) => x.toLowerCase().localeCompare(y.toLowerCase()));
		let dirs = 0;
		for (const e of entries.slice(0, 500)) {
			const s = await fsp.stat(path.join(a.path, e));
			if (s.isDirectory()) dirs++;
		}
		return entries.length;
	},
};

const rl = readline.createInterface({ input: process.stdin, terminal: false });
let queue = Promise.resolve();
rl.on("line", (line) => {
	queue = queue.then(async () => {
		let reply;
		try {
			const a = JSON.parse(line);
			const op = ops[a.op];
			if (!op) throw new Error(`unknown op ${a.op}`);
			const start = process.hrtime.bigint();
			const n = await op(a);
			const ns = process.hrtime.bigint() - start;
			reply = { ns: Number(ns), n };
		} catch (e) {
			reply = { error: String(e && e.stack ? e.stack : e) };
		}
		process.stdout.write(`${JSON.stringify(reply)}\n`);
	});
});
