#!/usr/bin/env bash
# Fails when src/gen differs from what `buf generate` makes from proto/ now.
# Regenerates into a temporary directory, so the checkout is never modified.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
npx --no-install buf generate --output "$tmp" >/dev/null
if ! diff -r -q "$tmp/src/gen" src/gen; then
  echo "src/gen is stale: run 'npx buf generate' and commit the result" >&2
  exit 1
fi
echo "src/gen is up to date"
