#!/usr/bin/env bash
# The first call on a fresh accelerator: a 1-minute window (shards, summary, inference check)
# and the settings probe of the model it trains (docs/accelerator.md).
#
#   bash tools/accelerator/smoke.sh [--model saphn-s --batch 64] [--compile]
#
# Options go to tools/accelerator/probe.py; the window trains configs/train/gpu-saphn-s.toml.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python="${PYTHON:-python3}"
out="${OUT:-$root/accelerator-out}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
status=0
bash tools/accelerator/train.sh --minutes 1 || status=$?  # a failed window still leaves the probe its turn
# --compile's child gets 60 s of the probe's 120 (its default 150 would outlast the timeout).
timeout 120 "$python" tools/accelerator/probe.py --out "$out" --compile-limit 60 "$@" || echo "probe failed (exit $?)"
exit "$status"
