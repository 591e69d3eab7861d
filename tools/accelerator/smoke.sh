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
bash tools/accelerator/train.sh --minutes 1
timeout 120 "$python" tools/accelerator/probe.py --out "$out" "$@" || echo "probe failed (exit $?)"
