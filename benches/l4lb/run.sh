#!/usr/bin/env bash
# L4 load balancing side by side (perf.md §6.2): nginx (1 worker, `return 200 "ok"`) behind
# HAProxy `mode tcp` (nbthread 1) and behind Flotilla's VIP proxy (actors/examples/l4lb_proxy.rs),
# loaded with `wrk -t1 -c50 -d10s`, keep-alive (requests/s) and `Connection: close` (new
# connections/s); then a removal check: two backends, one removed (TaskGone) and then killed in
# the middle of a close-per-request run, counting wrk's errors (expected 0).
#
# Usage: benches/l4lb/run.sh [duration, default 10s]. Needs root for apt-get (if nginx, haproxy
# or wrk are missing) and for the named VIP on lo (otherwise a 127.0.0.0/8 IP VIP is used).
set -euo pipefail

DURATION=${1:-10s}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d /tmp/l4lb-bench.XXXXXX)
PIDS=()

cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

need=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v wrk >/dev/null || need+=(wrk)
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

declare -A KA CC
run_all() { # name url
    read -r rate p99 errors < <(rps "$2"); KA[$1]="$rate rps, p99 $p99, errors $errors"; KA_RATE[$1]=$rate
    read -r rate p99 errors < <(rps "$2" -H 'Connection: close'); CC[$1]="$rate conn/s, p99 $p99, errors $errors"; CC_RATE[$1]=$rate
}
declare -A KA_RATE CC_RATE
run_all direct "http://127.0.0.1:$NGINX/"
run_all haproxy "http://127.0.0.1:$HAPROXY/"
start_flotilla "$LABEL" "$NGINX"
run_all flotilla "http://$PROXY_ADDR/"
stop_flotilla
start_flotilla "$LABEL" "$NGINX" --copy
run_all flotilla-copy "http://$PROXY_ADDR/"
stop_flotilla

echo
echo "wrk -t1 -c50 -d$DURATION, nginx 1 worker; Flotilla VIP $LABEL ($VIP_HOST)"
printf '%-15s %-45s %s\n' path keep-alive "Connection: close"
for name in direct haproxy flotilla flotilla-copy; do
    printf '%-15s %-45s %s\n' "$name" "${KA[$name]}" "${CC[$name]}"
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
echo "flotilla / haproxy: keep-alive $(ratio "${KA_RATE[flotilla]}" "${KA_RATE[haproxy]}")x, new connections $(ratio "${CC_RATE[flotilla]}" "${CC_RATE[haproxy]}")x (goal >= 1.2x)"

# Removal during a run: backend 0 is removed (TaskGone) a third of the way in, and killed
# half a second later; a connection sent to it after its removal would fail.
echo
NGINX2=$(free_port); start_nginx nginx2 "$NGINX2"
NGINX2_PID=${PIDS[-1]}
start_flotilla "$LABEL" "$NGINX2" "$NGINX"
wrk -t1 -c50 -d"$DURATION" -H 'Connection: close' "http://$PROXY_ADDR/" >"$WORK/kill.out" &
WRK=$!
sleep "$(awk -v d="${DURATION%s}" 'BEGIN { print d / 3 }')"
echo "remove 0" >&"$PROXY_IN"
sleep 0.5
kill "$NGINX2_PID"
wait "$WRK"
stop_flotilla
total=$(awk '/requests in/ {print $1}' "$WORK/kill.out")
errors=$(awk '/Socket errors/ {gsub(",",""); print $4+$6+$8+$10} /Non-2xx/ {print $5}' "$WORK/kill.out" | paste -sd+ | bc 2>/dev/null || echo 0)
echo "removal during a run: $total requests, ${errors:-0} failed (backend removed, then killed 0.5 s later)"
