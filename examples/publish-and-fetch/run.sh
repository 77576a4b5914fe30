#!/usr/bin/env bash
# A hub, a publisher and an agent on one machine: publish a package, change
# one part of it, publish the new version (only the change travels), then
# fetch the newest 1.x as the agent and check it byte for byte.
#
# Run from anywhere:   examples/publish-and-fetch/run.sh
# Uses $FERRY if set (a built `ferry` binary), else `cargo run --release`.
# Everything happens in a temporary directory that is removed at the end.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
if [ -z "${FERRY:-}" ]; then
    (cd "$here/../.." && cargo build --release --quiet -p ferry-cli)
    FERRY=$(cd "$here/../.." && cargo metadata --format-version 1 --no-deps \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/ferry
fi
work=$(mktemp -d)
hub_pid=""
cleanup() {
    [ -n "$hub_pid" ] && kill "$hub_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
cd "$work"

step() { printf '\n== %s\n' "$*"; }

step "create and start a hub (any free port on loopback)"
"$FERRY" hub init --data hub --listen 127.0.0.1:0
"$FERRY" hub run --data hub > hub.out &
hub_pid=$!
for _ in $(seq 100); do grep -q listening hub.out 2>/dev/null && break; sleep 0.1; done
url=$(grep -o 'https://[^ ]*' hub.out | head -n1)
echo "hub at $url"

step "enroll a publisher and an agent with one-time tokens"
"$FERRY" enroll --server "$url" --data publisher \
    --token "$("$FERRY" token create --data hub --role publisher 2>/dev/null)"
"$FERRY" enroll --server "$url" --data agent \
    --token "$("$FERRY" token create --data hub --role agent --site berlin 2>/dev/null)"

step "publish my-app 1.0.0"
mkdir -p my-app/bin my-app/etc
head -c 8000000 /dev/urandom > my-app/bin/server
printf 'port = 8080\n' > my-app/etc/server.toml
"$FERRY" publish my-app --name my-app --version 1.0.0 --data publisher

step "change 64 KiB of the binary and publish 1.1.0: only the change is sent"
dd if=/dev/urandom of=my-app/bin/server bs=1k count=64 seek=2000 conv=notrunc status=none
"$FERRY" publish my-app --name my-app --version 1.1.0 --data publisher \
    --install copy --param target=/opt/my-app

step "list the versions the agent may fetch"
"$FERRY" packages my-app --data agent

step "the agent fetches the newest 1.x, every byte checked against the hub's signatures"
"$FERRY" fetch 'my-app@^1' --out fetched --data agent
diff -r my-app fetched && echo "fetched files are identical to the published ones"
