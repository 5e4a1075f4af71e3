#!/usr/bin/env bash
# The one release build of the dialout binary. The Dockerfile's build stage and CI
# (docker/check) both run this script, so the image and CI build with the same command
# and flags. With an argument, the binary is copied into that folder too.
#
#   docker/build.sh            # target/release/dialout
#   docker/build.sh /out       # ... and /out/dialout
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin dialout
if [ $# -gt 0 ]; then
  install -D -m 0755 target/release/dialout "$1/dialout"
fi
