#!/usr/bin/env bash
# Compares the public API of this checkout with that of another commit (default: the first
# parent of HEAD): every public path with its kind and signature, from rustdoc's JSON output,
# ids stripped. Prints the difference (lines starting with < are gone, > are new) and exits
# 1 if anything public was removed or changed. Needs python3; rustdoc's JSON output is
# unstable, so it runs with RUSTC_BOOTSTRAP=1. Usage: bash .ci/public-api.sh [REV]
set -euo pipefail
cd "$(dirname "$0")/.."
rev="${1:-HEAD~1}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${HOME:-/root}/.cache/session-stores-target}"
work="$(mktemp -d)"
trap 'git worktree remove --force "$work/old" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
api() { # dir out
    (cd "$1" && RUSTC_BOOTSTRAP=1 cargo rustdoc -q --all-features --lib -- \
        -Z unstable-options --output-format json)
    python3 "$PWD/.ci/public-api.py" "$CARGO_TARGET_DIR/doc/session_stores.json" \
        | sed -E 's/"id": [0-9]+, //g; s/"id": [0-9]+//g' > "$2"
}
git worktree add -q --detach "$work/old" "$rev"
api "$work/old" "$work/before.txt"
api . "$work/after.txt"
if diff "$work/before.txt" "$work/after.txt" | cut -c1-160; then
    echo "public API unchanged"
else
    if diff "$work/before.txt" "$work/after.txt" | grep -q '^<'; then
        echo "public items were removed or changed (lines starting with <)"; exit 1
    fi
    echo "public API: additions only"
fi
