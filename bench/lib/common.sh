# Shared by the bench/ scripts: build Ferry once, install anchor tools from
# Debian when missing, time commands, relay through a byte counter, and
# clean up every process and file a script started, however it exits.

set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOT_DIR=$(dirname "$BENCH_DIR")
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ferry-bench.XXXXXX")
BG_PIDS=()

cleanup() {
    for pid in "${BG_PIDS[@]:-}"; do
        [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

# Builds the release binaries; sets FERRY and FERRY_BENCH.
build_ferry() {
    echo "building ferry (release)..." >&2
    (cd "$ROOT_DIR" && cargo build --release --quiet -p ferry-cli -p ferry-bench)
    local target
    target=$(cd "$ROOT_DIR" && cargo metadata --format-version 1 --no-deps \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
    FERRY="$target/release/ferry"
    FERRY_BENCH="$target/release/ferry-bench"
}

# need_debs COMMAND:PACKAGE ... installs each package whose command is missing.
need_debs() {
    local missing=()
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing ${missing[*]} from Debian..." >&2
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

# best_of N COMMAND... prints the fastest wall time of N runs, in seconds.
best_of() {
    python3 - "$@" <<'PY'
import subprocess, sys, time
runs = int(sys.argv[1]); best = None
for _ in range(runs):
    t = time.perf_counter()
    subprocess.run(sys.argv[2:], check=True, stdout=subprocess.DEVNULL)
    d = time.perf_counter() - t
    best = d if best is None or d < best else best
print(f"{best:.4f}")
PY
}

# free_port prints a port nothing listens on now (for anchor daemons that
# cannot report the port they bound).
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_counter HOST:PORT NAME starts a byte counter in front of HOST:PORT
# and sets COUNTER_PORT to the port it listens on; its totals are in
# $WORK/NAME.count. (Not for use in $(...): the counter must be a child of
# the script itself so the exit trap stops it.)
start_counter() {
    local out="$WORK/$2.port"
    python3 "$BENCH_DIR/lib/byte_counter.py" "$1" "$WORK/$2.count" > "$out" &
    BG_PIDS+=($!)
    wait_for_line "$out"
    COUNTER_PORT=$(head -n1 "$out")
}

# counted NAME prints the bytes (up + down) the counter NAME has relayed.
counted() {
    awk '{print $1 + $2}' "$WORK/$1.count"
}

# wait_for_line FILE waits until FILE has a first line (a started process
# reporting readiness), for at most 60 s.
wait_for_line() {
    for _ in $(seq 600); do
        [ -s "$1" ] && return 0
        sleep 0.1
    done
    echo "timed out waiting for $1" >&2
    return 1
}

# human BYTES
human() {
    python3 -c 'import sys; n=float(sys.argv[1]); u=["B","KiB","MiB","GiB"]; i=0
while n>=1024 and i<3: n/=1024; i+=1
print(f"{n:.2f} {u[i]}")' "$1"
}

# ratio A B prints A/B with three decimals.
ratio() {
    python3 -c 'import sys; print(f"{float(sys.argv[1])/float(sys.argv[2]):.3f}")' "$1" "$2"
}
