#!/bin/sh
# Runs the imapgate benchmark harness (see bench/README.md). Arguments go to the
# harness, e.g.  bench/run.sh --quick   or   bench/run.sh --tls
set -eu
here=$(cd "$(dirname "$0")" && pwd)
# 1000+ idle sessions through a proxy need several thousand descriptors.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo build --release --quiet --manifest-path "$here/Cargo.toml"
exec "$here/target/release/imapgate-bench" "$@"
