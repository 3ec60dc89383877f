#!/usr/bin/env bash
# Builds the native module into THIS checkout's reference/_core.abi3.so without touching the
# pip installation, so several worktrees can each have their own build. Use it with
# PYTHONPATH=<checkout> (which wins over the editable install's path).
# CARGO_TARGET_DIR may be set to keep one build cache per worktree.
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${PROFILE:-release}"
flag=(); [ "$profile" = release ] && flag=(--release)
cargo build --quiet -p blockcore-py "${flag[@]}"
target="${CARGO_TARGET_DIR:-target}"
cp "$target/$profile/lib_core.so" reference/_core.abi3.so.tmp
mv reference/_core.abi3.so.tmp reference/_core.abi3.so
echo "built reference/_core.abi3.so ($profile)"
