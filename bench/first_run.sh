#!/usr/bin/env bash
# From a fresh clone to a running `ctflow up`: clones this repository into a temporary
# folder, runs the README's first command there (read from the README, so the two cannot
# drift apart) and reports the seconds until `up` says `ctflow is up at`, then stops it.
# Crates already in Cargo's download cache are not downloaded again; run `cargo fetch`
# first on a fresh machine so that the figure is build time, not download time.
#   bench/first_run.sh [OUT_JSON]
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
git clone --quiet "$repo" "$work/ctflow"
cd "$work/ctflow"
command=$(python3 - <<'PY'
import pathlib
readme = pathlib.Path("README.md").read_text()
block = readme.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
print(block.strip().splitlines()[0].split("#")[0].strip())
PY
)
echo "running: $command" >&2
unset CARGO_TARGET_DIR
start=$(date +%s.%N)
# A new process group, so that stopping `up` stops cargo and everything it started.
setsid bash -c "exec $command" > "$work/up.log" 2>&1 &
pid=$!
ready=""
while kill -0 "$pid" 2>/dev/null; do
    if grep -q "ctflow is up at" "$work/up.log"; then
        ready=$(date +%s.%N)
        break
    fi
    sleep 1
done
finished=$(grep -o 'Finished `[a-z]*` profile.* in .*' "$work/up.log" | head -1 || true)
kill -INT -- "-$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
if [ -z "$ready" ]; then
    tail -30 "$work/up.log" >&2
    echo "ctflow up did not start" >&2
    exit 1
fi
seconds=$(python3 -c "print(round($ready - $start, 1))")
echo "cargo: $finished" >&2
echo "from a fresh clone to a running ctflow up: $seconds s" >&2
json="{\"command\": \"$command\", \"cargo\": \"${finished//\"/}\", \"seconds_to_up\": $seconds, \"cores\": $(nproc)}"
echo "$json"
if [ -n "${1:-}" ]; then echo "$json" > "$1"; fi
