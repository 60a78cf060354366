#!/usr/bin/env bash
# Ingest benchmark: rlclaw's bridge and ReinforceClaw 0.1.0's bridge side by side, under the
# same load tool (`rlclaw bench ingest`, which signs for rlclaw and sends the peer's secret
# header for ReinforceClaw). Results go to stdout as a Markdown table; copy them into
# BENCHMARKS.md with the date and the machine.
#
#   bridge/benches/ingest.sh [RUNS]          (default 3 runs per case)
#
# The peer's 240-requests-per-minute limit is lifted in its venv copy, so that the server
# itself is measured (as shared/reference/anchor-ingest.md did).
set -euo pipefail
runs=${1:-3}
root=$(cd "$(dirname "$0")/../.." && pwd)
scratch=${SCRATCH:-$(mktemp -d)}
cd "$root"
# The ingest path needs no model endpoint: leave mistral.rs out of this build.
cargo build --release -q -p rlclaw --no-default-features
rlclaw="${CARGO_TARGET_DIR:-$root/target}/release/rlclaw"

# --- the peer, once ---
if [ ! -x "$scratch/venv/bin/python" ]; then
    python3 -m venv "$scratch/venv"
    "$scratch/venv/bin/pip" install -q reinforceclaw==0.1.0
fi
peer_py=$(ls "$scratch"/venv/lib/python3*/site-packages/reinforceclaw/hooks/openclaw.py)
sed -i 's/^MAX_REQUESTS_PER_MINUTE = 240$/MAX_REQUESTS_PER_MINUTE = 1_000_000_000  # benchmark: limit lifted/' "$peer_py"
secret=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')
if [ ! -d "$scratch/home.pristine" ]; then
    mkdir -p "$scratch/home"
    HOME="$scratch/home" "$scratch/venv/bin/python" - "$secret" <<'PY'
import sys
from reinforceclaw import cli, db
cfg = {"model": "Qwen/Qwen3-8B", "server": "ollama", "preset": "balanced", "agents": ["openclaw"],
       "panel_enabled": True, "tuning_mode": "auto", **cli.DEFAULTS}
cfg["train_schedule"] = "manual"
cfg["openclaw_secret"] = sys.argv[1]
cfg["openclaw_feedback_mode"] = "slash_reactions_prompt"
cli.save_config(cli._resolve_config(cfg)); db.init()
PY
    cp -a "$scratch/home" "$scratch/home.pristine"
    echo "$secret" > "$scratch/secret"
fi
secret=$(cat "$scratch/secret")

wait_port() { for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

start_peer() {
    rm -rf "$scratch/home" && cp -a "$scratch/home.pristine" "$scratch/home"
    HOME="$scratch/home" REINFORCECLAW_OPENCLAW_SECRET="$secret" \
        "$scratch/venv/bin/python" -m reinforceclaw.hooks.openclaw > "$scratch/peer.log" 2>&1 &
    peer_pid=$!
    wait_port 8420
}

start_rlclaw() {
    rm -rf "$scratch/rl" && mkdir -p "$scratch/rl"
    printf '[training]\nauto_after = 0\n' > "$scratch/rl/config.toml"
    chmod 700 "$scratch/rl"
    RLCLAW_LOG=warn "$rlclaw" serve --data-dir "$scratch/rl" --listen 127.0.0.1:8430 &
    rl_pid=$!
    wait_port 8430
}

bench() { # peer workload extra-args...
    local peer=$1 workload=$2; shift 2
    if [ "$peer" = rlclaw ]; then
        "$rlclaw" --data-dir "$scratch/rl" bench ingest --json --workload "$workload" --pid "$rl_pid" "$@"
    else
        "$rlclaw" bench ingest --json --peer reinforceclaw --peer-secret "$secret" \
            --bridge 127.0.0.1:8420 --workload "$workload" --pid "$peer_pid" "$@"
    fi
}

case_run() { # label peer workload args...
    local label=$1 peer=$2; shift 2
    for i in $(seq "$runs"); do
        if [ "$peer" = rlclaw ]; then start_rlclaw; else start_peer; fi
        sleep 1
        bench "$peer" "$@" > "$scratch/$label.$i.json" || true
        if [ "$peer" = rlclaw ]; then kill "$rl_pid"; wait "$rl_pid" || true; else kill "$peer_pid"; wait "$peer_pid" || true; fi
    done
}

case_run rl-ratings rlclaw ratings --connections 16 --duration 20
case_run rc-ratings reinforceclaw ratings --connections 16 --duration 20
case_run rl-captures rlclaw captures --connections 16 --duration 20
case_run rc-captures reinforceclaw captures --connections 16 --duration 20
case_run rl-fixed1000 rlclaw ratings --connections 16 --duration 60 --rate 1000
case_run rc-fixed100 reinforceclaw captures --connections 16 --duration 20 --rate 100

python3 - "$scratch" "$runs" <<'PY'
import json, statistics, sys, glob, os
scratch, runs = sys.argv[1], int(sys.argv[2])
def load(label):
    out = []
    for i in range(1, runs + 1):
        p = f"{scratch}/{label}.{i}.json"
        if os.path.exists(p) and os.path.getsize(p) > 0:
            out.append(json.load(open(p)))
    return out
print("| case | runs | ok/s min / median / max | p50 / p99 ms (median run) | p99 ms, each run | errors | RSS idle / peak MB |")
print("|---|---|---|---|---|---|---|")
for label, name in [("rl-ratings", "rlclaw signed ratings, 16 conns, 20 s"),
                    ("rc-ratings", "ReinforceClaw capture→good pairs, 16 conns, 20 s"),
                    ("rl-captures", "rlclaw signed captures, 16 conns, 20 s"),
                    ("rc-captures", "ReinforceClaw captures, 16 conns, 20 s"),
                    ("rl-fixed1000", "rlclaw ratings at a fixed 1,000/s, 60 s"),
                    ("rc-fixed100", "ReinforceClaw captures at a fixed 100/s, 20 s")]:
    rs = load(label)
    if not rs:
        print(f"| {name} | 0 | – | – | – | – | – |"); continue
    rates = sorted(r["ok_per_s"] for r in rs)
    # At a fixed rate every run holds the rate: the median run is the one of median p99.
    key = "ok_per_s" if "fixed" not in label else None
    med = sorted(rs, key=lambda r: r[key] if key else r["latency_ms"]["p99"])[len(rs) // 2]
    p99s = " / ".join(f"{r['latency_ms']['p99']:.2f}" for r in rs)
    errs = sum(r["errors"] for r in rs)
    idle = [r["rss_idle_kb"] for r in rs if r.get("rss_idle_kb")]
    peak = [r["rss_peak_kb"] for r in rs if r.get("rss_peak_kb")]
    mem = f"{min(idle)/1024:.1f} / {max(peak)/1024:.1f}" if idle and peak else "–"
    print(f"| {name} | {len(rs)} | {rates[0]:,.0f} / {statistics.median(rates):,.0f} / {rates[-1]:,.0f} | "
          f"{med['latency_ms']['p50']:.2f} / {med['latency_ms']['p99']:.2f} | {p99s} | {errs} | {mem} |")
PY
