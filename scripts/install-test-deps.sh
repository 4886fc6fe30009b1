#!/usr/bin/env bash
# Installs what the tests need from the host and says what it does; running it again changes
# nothing. Today: `nft` (Debian's nftables), for the load balancer's nftables data plane test
# (actors/tests/l4lb.rs), which is skipped without it. Only root can install or use it, so
# other users are told and nothing is done.
set -euo pipefail

if command -v nft >/dev/null 2>&1 || [ -x /usr/sbin/nft ]; then
    echo "install-test-deps: nft present, nothing to install"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "install-test-deps: nft missing, not root: not installing (the nftables test will be skipped)"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-test-deps: nft missing and no apt-get: install nftables by hand (the nftables test will be skipped)"
    exit 0
fi
echo "install-test-deps: installing nftables with apt-get"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nftables >/dev/null
echo "install-test-deps: $(nft --version)"
