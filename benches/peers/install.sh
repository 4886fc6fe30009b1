#!/usr/bin/env bash
# Installs the Debian packages that the side-by-side benchmark peers need,
# only when they are missing. Idempotent; silent when everything is present.
#
# To add a peer, add one `need <command> <package>` line at the bottom.
set -euo pipefail

updated=0

# need COMMAND PACKAGE: install PACKAGE if COMMAND is not on PATH.
need() {
    local cmd=$1 pkg=$2
    command -v "$cmd" >/dev/null 2>&1 && return 0

    if [ "$(id -u)" -ne 0 ]; then
        echo "install.sh: '$cmd' missing and not root; install '$pkg' by hand" >&2
        exit 1
    fi
    # Refresh the package lists once per run, and only if something is missing.
    if [ "$updated" -eq 0 ]; then
        apt-get update -qq >/dev/null
        updated=1
    fi
    echo "install.sh: installing $pkg (for $cmd)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null
    command -v "$cmd" >/dev/null 2>&1 || {
        echo "install.sh: '$pkg' installed but '$cmd' still not found" >&2
        exit 1
    }
}

need escript erlang-base   # benches/peers/restart_latency.erl
need etcd etcd-server      # benches/consensus.rs (3-member cluster on loopback)
need etcdctl etcd-client   # benches/consensus.rs (manual inspection of the cluster)
need crun crun               # benches/launch.rs (OCI runtime beside the isolating driver)
