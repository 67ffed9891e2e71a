#!/usr/bin/env bash
# Makes the release tarball imapgate-VERSION.tar.xz in OUTDIR: the source tree, plus
# vendor/ (every crate of Cargo.lock) and .cargo/config.toml pointing cargo at vendor/,
# so that `cargo build --release --frozen --offline` needs no network. Debian's orig
# tarball and the RPM's Source0 are this file.
#
#   contrib/dist.sh OUTDIR              # the committed tree (git archive HEAD)
#   contrib/dist.sh --worktree OUTDIR   # the work tree as it is: tracked and untracked
#                                       # files, except those .gitignore ignores
#
# vendor/ is filtered to Linux: crates that no Linux target needs (windows-sys and its
# import libraries, wasi, r-efi, ...) are replaced by stubs, their Cargo.toml (cargo
# reads it to check Cargo.lock) and an empty src/lib.rs, their checksum file listing
# no files. Also left out, with their checksums: files that the build never uses and
# that a distribution would not ship (the SQLite and SQLCipher sources bundled in
# libsqlite3-sys, which links the system's libsqlite3 here; ring's prebuilt Windows
# object files; vcpkg's test data, Windows binaries). The debian/ directory is left out
# too: Debian's source package brings its own.
#
# Needs git, cargo (network to crates.io, or the crates in cargo's cache), python3, tar
# and xz. The tarball is reproducible: sorted, owned by root, dated by the last commit.
set -euo pipefail

usage() { echo "usage: $0 [--worktree] OUTDIR" >&2; exit 64; }
worktree=no
case "${1:-}" in
    --worktree) worktree=yes; shift ;;
    -h|--help) usage ;;
esac
[ $# -eq 1 ] || usage
mkdir -p "$1"
outdir=$(cd "$1" && pwd)
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

version=$(sed -n '/^\[package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n1)
[ -n "$version" ] || { echo "dist: no version in Cargo.toml" >&2; exit 1; }
name=imapgate-$version
# The date of every file in the tarball (reproducible builds): the last commit's.
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/imapgate-dist.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/$name"

if [ "$worktree" = yes ]; then
    # Tracked files (as they are now, deleted ones skipped) and untracked, unignored ones.
    git ls-files -z --cached --others --exclude-standard \
        | while IFS= read -r -d '' f; do
            if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi
        done \
        | tar --null --no-recursion -T - -cf - | tar -xf - -C "$tmp/$name"
else
    git archive --format=tar HEAD | tar -xf - -C "$tmp/$name"
fi
rm -rf "$tmp/$name/debian"

cd "$tmp/$name"
echo "dist: vendoring the crates of Cargo.lock"
cargo vendor --locked --quiet vendor >/dev/null
mkdir -p .cargo
cat > .cargo/config.toml <<'TOML'
# Written by contrib/dist.sh: build from the crates in vendor/, without network
# (cargo build --release --frozen --offline).
[source.crates-io]
replace-with = "vendored-sources"

[source.vendored-sources]
directory = "vendor"
TOML

echo "dist: filtering vendor/ to Linux"
python3 - <<'PY'
import json, os, shutil, subprocess, tomllib

# Debian's release architectures, and the usual RPM ones among them: a crate that any
# of them needs stays whole.
TARGETS = [
    "x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu", "i686-unknown-linux-gnu",
    "armv7-unknown-linux-gnueabihf", "arm-unknown-linux-gnueabi",
    "powerpc64le-unknown-linux-gnu", "s390x-unknown-linux-gnu",
    "riscv64gc-unknown-linux-gnu", "mips64el-unknown-linux-gnuabi64",
]
# Files and directories that no build here uses, removed from crates that stay (a name
# that is not there is skipped). Also ring's prebuilt Windows COFF objects (pregenerated/*.o, made
# by nasm from the .asm files, which stay), below.
DROP = {
    # The bundled SQLite and SQLCipher amalgamations ("bundled" features, never enabled
    # here); the pregenerated bindings next to them stay: they are what the build uses.
    "libsqlite3-sys": ["sqlite3/sqlite3.c", "sqlite3/sqlite3.h", "sqlite3/sqlite3ext.h",
                       "sqlcipher/sqlite3.c", "sqlcipher/sqlite3.h",
                       "sqlcipher/sqlite3ext.h"],
    # Test data of vcpkg (a build dependency that only MSVC builds use): Windows DLLs,
    # import libraries and executables.
    "vcpkg": ["test-data"],
}

needed = set()
for target in TARGETS:
    out = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--locked", "--offline",
         "--all-features", "--filter-platform", target],
        check=True, capture_output=True, text=True).stdout
    for pkg in json.loads(out)["packages"]:
        needed.add((pkg["name"], pkg["version"]))

def checksums(d):
    with open(os.path.join(d, ".cargo-checksum.json")) as f:
        return json.load(f)

def write_checksums(d, data):
    with open(os.path.join(d, ".cargo-checksum.json"), "w") as f:
        json.dump(data, f, sort_keys=True, separators=(",", ":"))

stubbed, dropped = [], 0
for entry in sorted(os.listdir("vendor")):
    d = os.path.join("vendor", entry)
    with open(os.path.join(d, "Cargo.toml"), "rb") as f:
        pkg = tomllib.load(f)["package"]
    key = (pkg["name"], pkg["version"])
    if key not in needed:
        sums = checksums(d)
        for child in os.listdir(d):
            if child == "Cargo.toml":
                continue
            p = os.path.join(d, child)
            shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.remove(p)
        os.makedirs(os.path.join(d, "src"))
        open(os.path.join(d, "src", "lib.rs"), "w").close()
        write_checksums(d, {"files": {}, "package": sums["package"]})
        stubbed.append(entry)
        continue
    drop = list(DROP.get(pkg["name"], []))
    if pkg["name"] == "ring":
        pre = os.path.join(d, "pregenerated")
        if os.path.isdir(pre):
            drop += [f"pregenerated/{f}" for f in os.listdir(pre) if f.endswith((".o", ".obj"))]
    gone = [rel for rel in drop if os.path.exists(os.path.join(d, rel))]
    if gone:
        sums = checksums(d)
        for rel in gone:
            p = os.path.join(d, rel)
            shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)
            for f in [f for f in sums["files"] if f == rel or f.startswith(rel + "/")]:
                del sums["files"][f]
        write_checksums(d, sums)
        dropped += len(gone)

print(f"dist: {len(needed) - 1} crates needed on Linux, "
      f"{len(stubbed)} stubbed: {' '.join(stubbed) or '-'}; {dropped} unused files dropped")
PY
cd "$tmp"

tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    -cf - "$name" | xz -T0 -6 > "$outdir/$name.tar.xz.part"
mv "$outdir/$name.tar.xz.part" "$outdir/$name.tar.xz"
echo "dist: $outdir/$name.tar.xz ($(du -h "$outdir/$name.tar.xz" | cut -f1);" \
    "vendor/ $(du -sh "$name/vendor" | cut -f1) unpacked)"
