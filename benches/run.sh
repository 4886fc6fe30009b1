#!/usr/bin/env bash
# Installs the benchmark peers (Debian packages), then runs every benchmark: the in-process
# ones unpinned and pinned to one core (`taskset -c 0`), the multi-process consensus one
# (three master processes and an etcd cluster, which need both cores) once, as
# BENCHMARKS.md records them.
set -euo pipefail
cd "$(dirname "$0")/.."
benches/peers/install.sh
for bench in restart_latency actor_overhead transport allocator; do
    echo "== $bench (unpinned)"
    cargo bench -q --bench "$bench"
    echo "== $bench (pinned: taskset -c 0)"
    taskset -c 0 cargo bench -q --bench "$bench"
done
echo "== launch (isolating driver beside crun; needs root)"
cargo bench -q --bench launch
echo "== agent_launch (1,000 tasks through one agent; needs root)"
cargo bench -q --bench agent_launch
echo "== consensus"
cargo bench -q --bench consensus
