#!/usr/bin/env bash
# L4 load balancing side by side (perf.md §6.2): nginx (1 worker, `return 200 "ok"`) directly,
# behind HAProxy `mode tcp` (nbthread 1), and behind a Flotilla VIP (actors/examples/l4lb_proxy.rs)
# on both data planes: the user-space proxy (copying relay, a node's default) and nftables DNAT;
# loaded with `wrk -t1 -c50 -d10s`, keep-alive (requests/s) and `Connection: close` (new
# connections/s), each printed with its ratio to HAProxy. Then a removal check on each data
# plane: two backends, one removed (TaskGone) and then killed in the middle of a
# close-per-request run, counting wrk's errors (expected 0).
#
# Usage: benches/l4lb/run.sh [duration, default 10s]. Needs root for apt-get (if nginx, haproxy,
# wrk or nft are missing), for the named VIP on lo (otherwise a 127.0.0.0/8 IP VIP is used) and
# for the nftables data plane (skipped otherwise).
set -euo pipefail

DURATION=${1:-10s}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d /tmp/l4lb-bench.XXXXXX)
PIDS=()

cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    # A killed example leaves what its actor's stop would have removed.
    if [ "$(id -u)" = 0 ]; then
        nft delete table ip flotilla_l4lb 2>/dev/null || true
        [ -n "${PROXY_ADDR:-}" ] && ip addr del "${PROXY_ADDR%:*}/32" dev lo 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

need=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v wrk >/dev/null || need+=(wrk)
if [ "$(id -u)" = 0 ]; then command -v nft >/dev/null || [ -x /usr/sbin/nft ] || need+=(nftables); fi
if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
export PATH=$PATH:/usr/sbin

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() { # host port
    for _ in $(seq 1 200); do
        (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on $1:$2" >&2
    return 1
}

start_nginx() { # name port
    local dir=$WORK/$1
    mkdir -p "$dir"
    cat >"$dir/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $dir; proxy_temp_path $dir; fastcgi_temp_path $dir;
    uwsgi_temp_path $dir; scgi_temp_path $dir;
    server { listen 127.0.0.1:$2; location / { return 200 "ok\n"; } }
}
CONF
    nginx -c "$dir/nginx.conf" -p "$dir" &
    PIDS+=($!)
    wait_port 127.0.0.1 "$2"
}

start_haproxy() { # port backend-port
    cat >"$WORK/haproxy.cfg" <<CONF
global
    nbthread 1
    maxconn 8000
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend fe
    bind 127.0.0.1:$1
    default_backend be
backend be
    balance roundrobin
    server s1 127.0.0.1:$2
CONF
    haproxy -f "$WORK/haproxy.cfg" -db &
    PIDS+=($!)
    wait_port 127.0.0.1 "$1"
}

# Starts the example with a FIFO on stdin (for `remove <n>`); sets PROXY_ADDR.
start_flotilla() { # label backend-port...
    local fifo=$WORK/proxy.in.$#.$RANDOM
    mkfifo "$fifo"
    "$CARGO_TARGET_DIR/release/examples/l4lb_proxy" "$@" <"$fifo" >"$fifo.out" 2>"$fifo.err" &
    PROXY_PID=$!
    PIDS+=($PROXY_PID)
    exec {PROXY_IN}>"$fifo"
    for _ in $(seq 1 200); do
        PROXY_ADDR=$(sed -n 's/^VIP //p' "$fifo.out")
        [ -n "$PROXY_ADDR" ] && return 0
        sleep 0.05
    done
    echo "the Flotilla proxy did not start:" >&2; cat "$fifo.err" >&2
    return 1
}

stop_flotilla() {
    echo quit >&"$PROXY_IN"
    exec {PROXY_IN}>&-
    # The next proxy must not start before this one has taken its VIP address off lo.
    wait "$PROXY_PID" || true
}

rps() { # url [extra wrk args]
    local url=$1; shift
    wrk -t1 -c50 -d"$DURATION" --latency "$@" "$url" >"$WORK/wrk.out"
    local rate errors p99
    rate=$(awk '/Requests\/sec/ {print int($2)}' "$WORK/wrk.out")
    p99=$(awk '$1=="99%" {print $2}' "$WORK/wrk.out")
    errors=$(awk '/Socket errors/ {gsub(",",""); print $4+$6+$8+$10} /Non-2xx/ {print $5}' "$WORK/wrk.out" | paste -sd+ | bc 2>/dev/null || echo 0)
    echo "$rate ${p99:-?} ${errors:-0}"
}

echo "building the example (release)..."
(cd "$ROOT" && cargo build -q --release -p flotilla-actors --example l4lb_proxy)

if [ "$(id -u)" = 0 ]; then VIP_HOST=named; else VIP_HOST=ip; fi
NGINX=$(free_port); start_nginx nginx1 "$NGINX"
HAPROXY=$(free_port); start_haproxy "$HAPROXY" "$NGINX"
VIP_PORT=$(free_port)
if [ $VIP_HOST = named ]; then LABEL=/l4lbbench:$VIP_PORT; else LABEL=127.0.0.100:$VIP_PORT; fi

declare -A KA CC KA_RATE CC_RATE
run_all() { # name url
    read -r rate p99 errors < <(rps "$2"); KA[$1]="$rate rps, p99 $p99, errors $errors"; KA_RATE[$1]=$rate
    read -r rate p99 errors < <(rps "$2" -H 'Connection: close'); CC[$1]="$rate conn/s, p99 $p99, errors $errors"; CC_RATE[$1]=$rate
}
# The data planes measured, with the example's mode flag: the proxy as a node runs it
# (copying relay), and nftables when root can load it.
PLANES=(proxy)
declare -A PLANE_FLAG=([proxy]=--copy [nftables]=--nftables)
if [ "$(id -u)" = 0 ]; then PLANES+=(nftables); else echo "not root: the nftables data plane is skipped"; fi

run_all direct "http://127.0.0.1:$NGINX/"
run_all haproxy "http://127.0.0.1:$HAPROXY/"
for plane in "${PLANES[@]}"; do
    start_flotilla "$LABEL" "$NGINX" "${PLANE_FLAG[$plane]}"
    run_all "$plane" "http://$PROXY_ADDR/"
    stop_flotilla
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
echo
echo "wrk -t1 -c50 -d$DURATION, nginx 1 worker; Flotilla VIP $LABEL ($VIP_HOST); goal >= 1.2x HAProxy"
printf '%-10s %-52s %s\n' path keep-alive "Connection: close"
for name in direct haproxy "${PLANES[@]}"; do
    ka="${KA[$name]} ($(ratio "${KA_RATE[$name]}" "${KA_RATE[haproxy]}")x)"
    cc="${CC[$name]} ($(ratio "${CC_RATE[$name]}" "${CC_RATE[haproxy]}")x)"
    printf '%-10s %-52s %s\n' "$name" "$ka" "$cc"
done

# Removal during a run, on each data plane: backend 0 is removed (TaskGone) a third of the way
# in, and killed half a second later; a connection sent to it after its removal would fail.
echo
NGINX2=$(free_port); start_nginx nginx2 "$NGINX2"
NGINX2_PID=${PIDS[-1]}
for plane in "${PLANES[@]}"; do
    if ! kill -0 "$NGINX2_PID" 2>/dev/null; then
        start_nginx "nginx2-$plane" "$NGINX2"
        NGINX2_PID=${PIDS[-1]}
    fi
    start_flotilla "$LABEL" "$NGINX2" "$NGINX" "${PLANE_FLAG[$plane]}"
    wrk -t1 -c50 -d"$DURATION" -H 'Connection: close' "http://$PROXY_ADDR/" >"$WORK/kill.out" &
    WRK=$!
    sleep "$(awk -v d="${DURATION%s}" 'BEGIN { print d / 3 }')"
    echo "remove 0" >&"$PROXY_IN"
    sleep 0.5
    kill "$NGINX2_PID"
    wait "$NGINX2_PID" 2>/dev/null || true
    wait "$WRK"
    stop_flotilla
    total=$(awk '/requests in/ {print $1}' "$WORK/kill.out")
    errors=$(awk '/Socket errors/ {gsub(",",""); print $4+$6+$8+$10} /Non-2xx/ {print $5}' "$WORK/kill.out" | paste -sd+ | bc 2>/dev/null || echo 0)
    echo "removal during a run ($plane): $total requests, ${errors:-0} failed (backend removed, then killed 0.5 s later)"
done
if [ "$(id -u)" = 0 ]; then
    echo "conntrack entries now: $(cat /proc/sys/net/netfilter/nf_conntrack_count 2>/dev/null || echo n/a) (max $(cat /proc/sys/net/netfilter/nf_conntrack_max 2>/dev/null || echo n/a))"
fi
