#!/usr/bin/env bash
# The Marathon API compatibility suite: starts `flotilla dev` on a fresh data directory and
# runs test_marathon_client.py (the real `marathon` client from PyPI) against its API.
#
# usage: run.sh FLOTILLA_BINARY [TEST...]
#   TEST: a test class or method of the suite, e.g. AppLifecycleTest (default: all of them)
#
# The client lives in a virtualenv at $FLOTILLA_COMPAT_VENV (default
# ~/.cache/flotilla/marathon-compat-venv), made on the first run and again whenever
# requirements.txt changes. Exits with the suite's status; prints the dev node's log when the
# suite fails. The dev node never outlives this script.
set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: $0 FLOTILLA_BINARY [TEST...]" >&2
    exit 2
fi
binary=$1
shift
if [[ ! -x $binary ]]; then
    echo "marathon-compat: $binary is not an executable file" >&2
    exit 2
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
requirements="$here/requirements.txt"
venv="${FLOTILLA_COMPAT_VENV:-$HOME/.cache/flotilla/marathon-compat-venv}"
stamp="$venv/flotilla-compat-requirements.txt"
python="$venv/bin/python"

# The client's virtualenv, rebuilt whenever requirements.txt differs from the copy it was built from.
if [[ ! -x $python ]] || ! cmp -s "$requirements" "$stamp"; then
    echo "marathon-compat: installing the client into $venv"
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv"
    "$python" -m pip install --quiet --disable-pip-version-check --no-input -r "$requirements"
    # Last, so that an install that failed halfway is redone next time.
    cp "$requirements" "$stamp"
fi
"$python" -c 'import marathon' || {
    echo "marathon-compat: the client does not import; delete $venv to rebuild it" >&2
    exit 1
}

workdir="$(mktemp -d "${TMPDIR:-/tmp}/flotilla-marathon-compat.XXXXXX")"
data_dir="$workdir/data"
log="$workdir/dev.log"
mkdir "$data_dir"
# A token the suite puts in every app's env: the task processes of this run carry it.
run_token="$(od -An -N4 -tx4 /dev/urandom | tr -d ' \n')"
pid=""

# True while the process is running (neither gone nor a zombie waiting to be reaped).
alive() {
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    stat="${stat##*) }"
    [[ ${stat:0:1} != Z ]]
}

# Stops the dev node: SIGTERM, which it handles as Ctrl-C (a script's background job ignores
# SIGINT), then SIGKILL to its whole process group if it has not stopped within 10 s. Kills any
# task process of this run that outlived it (tasks run in process groups of their own and an
# agent leaves them running when it stops). Prints the log if the suite failed, keeping it
# beside the work directory, and removes the rest.
cleanup() {
    local status=$?
    trap - EXIT
    if [[ -n $pid ]]; then
        kill -TERM -- "-$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            alive "$pid" || break
            sleep 0.2
        done
        kill -KILL -- "-$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    local proc
    for proc in /proc/[0-9]*; do
        if tr '\0' '\n' 2>/dev/null <"$proc/environ" | grep -qx "FLOTILLA_COMPAT_RUN=$run_token"; then
            kill -KILL "${proc#/proc/}" 2>/dev/null || true
        fi
    done
    if [[ $status -ne 0 && -f $log ]]; then
        mv "$log" "$workdir.dev.log"
        echo "marathon-compat: failed (exit $status); the last 100 lines of flotilla dev's output ($workdir.dev.log):"
        tail -n 100 "$workdir.dev.log" || true
    fi
    rm -rf "$workdir"
    exit "$status"
}
trap cleanup EXIT

# Its own session and process group (pid = group id), so that cleanup reaches all of it.
setsid "$binary" dev --data-dir "$data_dir" </dev/null >"$log" 2>&1 &
pid=$!

# `flotilla dev` prints `api: http://ADDRESS/master/state` (or, preferred when present, a
# `marathon: http://ADDRESS` line) before `flotilla dev: ready`.
ready=""
for _ in $(seq 1 300); do # 60 s, every 0.2 s
    if grep -q '^flotilla dev: ready' "$log"; then
        ready=yes
        break
    fi
    alive "$pid" || break
    sleep 0.2
done
# Why the dev node is gone, for the messages below ("" while it runs).
exited() {
    alive "$pid" && return 0
    local code=0
    wait "$pid" || code=$?
    pid=""
    echo "marathon-compat: flotilla dev exited with status $code" >&2
}
if [[ -z $ready ]]; then
    exited
    echo "marathon-compat: flotilla dev did not report ready" >&2
    exit 1
fi
url="$(sed -nE 's#^marathon: (https?://[^/[:space:]]+).*#\1#p' "$log" | head -n 1)"
if [[ -z $url ]]; then
    url="$(sed -nE 's#^api: (https?://[^/[:space:]]+).*#\1#p' "$log" | head -n 1)"
fi
if [[ -z $url ]]; then
    echo "marathon-compat: flotilla dev printed no 'api: http://...' line" >&2
    exit 1
fi

# The scheduler answers /v2/info (the leader is elected and the scheduler subscribed) before
# the suite starts; /ping alone only says the HTTP server is up.
ping_ok() {
    "$python" - "$url/v2/info" <<'EOF'
import sys
import urllib.request

try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as reply:
        sys.exit(0 if reply.status == 200 else 1)
except Exception:
    sys.exit(1)
EOF
}
pinged=""
for _ in $(seq 1 150); do # 30 s, every 0.2 s
    if ping_ok; then
        pinged=yes
        break
    fi
    alive "$pid" || break
    sleep 0.2
done
if [[ -z $pinged ]]; then
    exited
    echo "marathon-compat: GET $url/v2/info did not answer 200 within 30 s" >&2
    exit 1
fi

echo "marathon-compat: flotilla dev's API at $url"
status=0
MARATHON_URL="$url" FLOTILLA_COMPAT_RUN="$run_token" "$python" "$here/test_marathon_client.py" "$@" || status=$?
exit "$status"
