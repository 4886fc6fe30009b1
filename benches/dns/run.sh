#!/usr/bin/env bash
# DNS side by side, serving the same 1,000 and 100,000 A records and measured with dnsperf on
# the same query file:
#
# 1. one thread: Flotilla's DNS server (examples/dns_serve.rs, `threads = 1`) and dnsmasq
#    (single-threaded by design). Each server is pinned to core 1 and dnsperf (1 thread,
#    4 clients) to core 0 (cross-core wakeups cost ~44 us on this machine, see
#    reference/perf.md §0.3).
# 2. two threads: Flotilla with `threads = 2` and NSD with `server-count: 2` (and `reuseport`,
#    one socket per process, as Flotilla has one per thread). This machine has two cores, so
#    the servers and dnsperf (2 threads, 8 clients, 500 queries outstanding, so it is not
#    the one waiting) all run on cores 0-1 and the kernel places them; both servers face the
#    same contention, which the ratio cancels out.
#
# Then the TaskUp -> resolvable latency bench. Usage: benches/dns/run.sh [seconds per run]
set -euo pipefail
cd "$(dirname "$0")/../.."
SECONDS_PER_RUN="${1:-10}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"

if ! command -v dnsperf >/dev/null || ! command -v dnsmasq >/dev/null || ! command -v nsd >/dev/null; then
    apt-get update -qq && apt-get install -y -qq dnsperf dnsmasq-base nsd >/dev/null
fi
cargo build -q --release --example dns_serve
SERVE="$CARGO_TARGET_DIR/release/examples/dns_serve"

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits (bounded) until the server at port $1 answers name $2 with an address (python3, since
# dig is not part of the installed packages).
wait_ready() {
    python3 - "$1" "$2" <<'PY'
import socket, struct, sys, time
port, name = int(sys.argv[1]), sys.argv[2]
query = struct.pack(">HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0)
query += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
deadline = time.time() + 30
while time.time() < deadline:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.2)
    try:
        s.sendto(query, ("127.0.0.1", port))
        reply = s.recv(4096)
        if struct.unpack(">H", reply[6:8])[0] > 0:
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.1)
sys.exit(f"server on port {port} never answered {name}")
PY
}

# dnsperf's queries per second against port $1, from cores $2 with dnsperf options $3.
qps() {
    # shellcheck disable=SC2086 # $3 is a list of options
    taskset -c "$2" dnsperf -s 127.0.0.1 -p "$1" -d "$WORK/queries" -l "$SECONDS_PER_RUN" $3 2>&1 |
        tee "$WORK/dnsperf.$1.log" | awk '/Queries per second/ {print $4}'
}
ONE_THREAD_LOAD="-c 4 -T 1 -q 200"
TWO_THREAD_LOAD="-c 8 -T 2 -q 500"

ratio() { python3 -c "print(round($1/$2, 2))"; }

# Stops every server started so far.
stop_servers() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    PIDS=()
}

# The mesos zone of $1 names for NSD, the same records as the hosts file.
nsd_zone() {
    printf '$ORIGIN mesos.\n$TTL 60\n@ IN SOA ns1.mesos. root.ns1.mesos. 1 60 600 86400 60\n'
    printf '@ IN NS ns1.mesos.\nns1 IN A 127.0.0.1\n'
    awk -v n="$1" 'BEGIN { for (i = 0; i < n; i++) printf "app%d.marathon IN A 10.%d.%d.%d\n", i, int(i/65536)%256, int(i/256)%256, i%256 }'
}

# NSD on port $1 with two server processes, each with its own SO_REUSEPORT socket, answering
# only the asked records (minimal-responses), as Flotilla and dnsmasq do.
nsd_conf() {
    cat <<EOF
server:
    ip-address: 127.0.0.1
    port: $1
    server-count: 2
    reuseport: yes
    username: ""
    chroot: ""
    zonesdir: "$WORK"
    database: ""
    zonelistfile: "$WORK/nsd.zonelist"
    xfrdfile: "$WORK/nsd.xfrd"
    pidfile: "$WORK/nsd.pid"
    logfile: "$WORK/nsd.log"
    verbosity: 0
    minimal-responses: yes
remote-control:
    control-enable: no
zone:
    name: "mesos"
    zonefile: "$WORK/mesos.zone"
EOF
}

for N in 1000 100000; do
    # Task i is app<i>.marathon.mesos at 10.<i>>16>.<i>>8&255>.<i&255>, as dns_serve makes it.
    awk -v n="$N" 'BEGIN { for (i = 0; i < n; i++) printf "10.%d.%d.%d app%d.marathon.mesos\n", int(i/65536)%256, int(i/256)%256, i%256, i }' >"$WORK/hosts"
    awk -v n="$N" 'BEGIN { srand(42); for (q = 0; q < 100000; q++) printf "app%d.marathon.mesos A\n", int(rand()*n) }' >"$WORK/queries"

    FPORT="$(free_port)"
    taskset -c 1 "$SERVE" "$N" "$FPORT" >"$WORK/flotilla.log" 2>&1 &
    PIDS+=($!)
    wait_ready "$FPORT" app0.marathon.mesos

    MPORT="$(free_port)"
    taskset -c 1 dnsmasq --keep-in-foreground --no-resolv --no-hosts --addn-hosts="$WORK/hosts" \
        --local=/mesos/ --cache-size=10000 --port="$MPORT" --listen-address=127.0.0.1 --bind-interfaces \
        --user=root --pid-file="$WORK/dnsmasq.pid" --log-facility=- >"$WORK/dnsmasq.log" 2>&1 &
    PIDS+=($!)
    wait_ready "$MPORT" app0.marathon.mesos

    F="$(qps "$FPORT" 0 "$ONE_THREAD_LOAD")"
    M="$(qps "$MPORT" 0 "$ONE_THREAD_LOAD")"
    echo "== $N names, one thread: flotilla ${F} qps, dnsmasq ${M} qps, ratio $(ratio "$F" "$M")"
    grep -E "Average Latency|Queries lost" "$WORK/dnsperf.$FPORT.log" | sed 's/^/   flotilla: /'
    grep -E "Average Latency|Queries lost" "$WORK/dnsperf.$MPORT.log" | sed 's/^/   dnsmasq:  /'
    stop_servers

    F2PORT="$(free_port)"
    taskset -c 0,1 "$SERVE" "$N" "$F2PORT" 2 >"$WORK/flotilla2.log" 2>&1 &
    PIDS+=($!)
    wait_ready "$F2PORT" app0.marathon.mesos

    NPORT="$(free_port)"
    nsd_zone "$N" >"$WORK/mesos.zone"
    nsd_conf "$NPORT" >"$WORK/nsd.conf"
    taskset -c 0,1 nsd -d -c "$WORK/nsd.conf" >"$WORK/nsd.out" 2>&1 &
    PIDS+=($!)
    wait_ready "$NPORT" app0.marathon.mesos

    F2="$(qps "$F2PORT" 0,1 "$TWO_THREAD_LOAD")"
    N2="$(qps "$NPORT" 0,1 "$TWO_THREAD_LOAD")"
    echo "== $N names, two threads: flotilla ${F2} qps, nsd ${N2} qps, ratio $(ratio "$F2" "$N2")"
    grep -E "Average Latency|Queries lost" "$WORK/dnsperf.$F2PORT.log" | sed 's/^/   flotilla: /'
    grep -E "Average Latency|Queries lost" "$WORK/dnsperf.$NPORT.log" | sed 's/^/   nsd:      /'
    stop_servers
done

echo "== TaskUp -> resolvable"
cargo bench -q --bench dns_propagation

echo "== TASK_RUNNING -> resolvable, end to end through flotilla dev (registry commit, watch, feed, DNS)"
cargo build -q --release --bin flotilla
python3 benches/dns/running_to_resolvable.py "$CARGO_TARGET_DIR/release/flotilla" 200
