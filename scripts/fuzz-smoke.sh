#!/usr/bin/env bash
# A bounded fuzzing run of the wire codec's decode target: a smoke test, not a campaign.
#
# Usage: scripts/fuzz-smoke.sh [SECONDS]   (default 30)
#
# It starts from the committed seed corpus (transport/fuzz/corpus/decode) but copies it to a
# temporary directory first, so whatever libFuzzer discovers never lands in the repository.
# A crash fails the script; libFuzzer writes the input to transport/fuzz/artifacts/decode/
# (ignored by git) and prints the `cargo fuzz run` line that reproduces it.
set -euo pipefail

secs="${1:-30}"
case "$secs" in
    '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fuzz_dir="$root/transport/fuzz"

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# cargo fuzz builds with unstable compiler flags (-Zsanitizer=address and friends). The
# project's toolchain is stable; RUSTC_BOOTSTRAP=1 lets a stable rustc accept them, and its
# sanitizer runtimes ship with the standard library, so no nightly toolchain is needed.
export RUSTC_BOOTSTRAP=1

corpus="$(mktemp -d)"
trap 'rm -rf "$corpus"' EXIT
cp -R "$fuzz_dir/corpus/decode/." "$corpus/"

# Sanitized builds keep a target directory of their own: beside CARGO_TARGET_DIR when one is
# set (so CI rebuilds incrementally), else inside transport/fuzz (ignored by git).
target_dir="${CARGO_TARGET_DIR:+$CARGO_TARGET_DIR/fuzz}"
target_dir="${target_dir:-$fuzz_dir/target}"

# cargo fuzz finds transport/fuzz from transport/, the first non-fuzz package above the cwd.
cd "$root/transport"
cargo fuzz run --target-dir "$target_dir" decode "$corpus" -- -max_total_time="$secs" -print_final_stats=1
echo "fuzz-smoke: no crash in ${secs}s"
