#!/usr/bin/env bash
# Packs cordon's npm packages, as the Codex CLI and esbuild ship their binaries:
#
#   @cordon-sandbox/pi                 the pi extension (integrations/pi), with an
#                                      optional dependency on the package below
#   @cordon-sandbox/cordon-<os>-<cpu>  the cordon binary for one platform ("os" and
#                                      "cpu" fields: npm installs only the one that
#                                      fits the machine)
#
# The extension runs cordon from the platform package installed beside it, before
# any cordon on PATH (integrations/pi/client.ts, findCordon).
#
# usage: packaging/npm/pack.sh [--binary FILE] [--target TRIPLE] OUTDIR
#
#   --target  the Rust target the binary was built for (default x86_64-unknown-linux-gnu,
#             the one .cargo/config.toml builds); it names the platform package
#   --binary  the cordon binary (default target/TRIPLE/release/cordon: build it with
#             `cargo build --release --locked`)
#
# Writes OUTDIR/<package>-<version>.tgz for both packages, and OUTDIR/packed.json
# (what `npm pack --json` says of each: name, version, filename, integrity). Publish
# with `npm publish OUTDIR/<file>.tgz --access public`, the platform packages first.
# Try them before publishing: `npm install --legacy-peer-deps --prefix DIR
# OUTDIR/*.tgz` (pi, the peer, is not installed again), then
# `pi install DIR/node_modules/@cordon-sandbox/pi`.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
target=x86_64-unknown-linux-gnu
binary=
while (($#)); do
    case $1 in
        --binary) binary=$2; shift 2 ;;
        --target) target=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) echo "pack.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) break ;;
    esac
done
(($# == 1)) || { echo "usage: packaging/npm/pack.sh [--binary FILE] [--target TRIPLE] OUTDIR" >&2; exit 2; }
out=$(mkdir -p "$1" && cd "$1" && pwd)

case $target in
    x86_64-unknown-linux-gnu | x86_64-unknown-linux-musl) os=linux cpu=x64 elf_machine="3e 00" ;;
    aarch64-unknown-linux-gnu | aarch64-unknown-linux-musl) os=linux cpu=arm64 elf_machine="b7 00" ;;
    *) echo "pack.sh: no npm platform for target $target (known: x86_64- and aarch64-unknown-linux-gnu/musl)" >&2; exit 2 ;;
esac
binary=${binary:-$repo/target/$target/release/cordon}
[[ -x $binary ]] || { echo "pack.sh: $binary is not an executable; build it: cargo build --release --locked --target $target" >&2; exit 1; }
machine=$(od -An -tx1 -j18 -N2 "$binary" | xargs)
[[ $machine == "$elf_machine" ]] || { echo "pack.sh: $binary is not a binary for $target (ELF machine $machine); pass the right --binary or --target" >&2; exit 1; }

# One version for the binary and both packages.
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -n1)
ext_version=$(node -p 'require(process.argv[1]).version' "$repo/integrations/pi/package.json")
dep_version=$(node -p 'require(process.argv[1]).optionalDependencies[process.argv[2]] || ""' \
    "$repo/integrations/pi/package.json" "@cordon-sandbox/cordon-$os-$cpu")
[[ $ext_version == "$version" && $dep_version == "$version" ]] || {
    echo "pack.sh: versions differ: Cargo.toml $version, integrations/pi/package.json $ext_version, its optionalDependencies[\"@cordon-sandbox/cordon-$os-$cpu\"] '$dep_version' (a new platform is added there); make them all $version" >&2
    exit 1
}
"$binary" --version | grep -qx "cordon $version" || {
    echo "pack.sh: $binary is not cordon $version ($("$binary" --version 2>&1 | head -n1))" >&2
    exit 1
}

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
pkg=$stage/cordon-$os-$cpu
mkdir -p "$pkg/bin"
cp "$binary" "$pkg/bin/cordon"
strip --strip-all "$pkg/bin/cordon" 2>/dev/null || true   # a release build already is
chmod 0755 "$pkg/bin/cordon"
cat >"$pkg/package.json" <<JSON
{
  "name": "@cordon-sandbox/cordon-$os-$cpu",
  "version": "$version",
  "description": "The cordon binary for $os-$cpu (a sandbox for AI coding agents); installed by @cordon-sandbox/pi",
  "license": "Apache-2.0",
  "os": ["$os"],
  "cpu": ["$cpu"],
  "files": ["bin/cordon"],
  "preferUnplugged": true
}
JSON
cat >"$pkg/README.md" <<MD
# @cordon-sandbox/cordon-$os-$cpu

The \`cordon\` binary ($target, statically linked) for the pi extension
[@cordon-sandbox/pi](https://www.npmjs.com/package/@cordon-sandbox/pi), which installs
this package on $os-$cpu machines and runs \`bin/cordon\` from it.
MD

# npm pack --json prints an array for each package; packed.json holds both.
{
    (cd "$pkg" && npm pack --json --pack-destination "$out" --loglevel=error)
    (cd "$repo/integrations/pi" && npm pack --json --pack-destination "$out" --loglevel=error)
} >"$stage/packed.txt"
node -e '
    const text = require("fs").readFileSync(process.argv[1], "utf8");
    const all = text.split(/(?<=\])\s*(?=\[)/).flatMap((part) => JSON.parse(part));
    const keep = all.map(({ name, version, filename, integrity, shasum }) => ({ name, version, filename, integrity, shasum }));
    require("fs").writeFileSync(process.argv[2], JSON.stringify(keep, null, 2) + "\n");
    for (const p of keep) console.log(require("path").join(process.argv[3], p.filename));
' "$stage/packed.txt" "$out/packed.json" "$out"
