#!/usr/bin/env bash
# One training window on the accelerator machine, then the CUDA inference check (docs/accelerator.md).
#
#   bash tools/accelerator/train.sh [window options] [--no-infer-check]
#
# Window options go to `python -m deblur_cli.training.window` (--config, --resume-from DIR,
# --minutes M, --device, --model, --batch, ...); the defaults train configs/train/gpu-saphn-s.toml
# for 6 minutes on the photos carried in data/carry/photos, which leaves room in a 10-minute
# call for start-up, validation, writing the result and the inference check (about 90 s).
# It runs there as it is: this checkout on PYTHONPATH, nothing installed. Results go to $OUT.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python="${PYTHON:-python3}"
out="${OUT:-$root/accelerator-out}"
infer=1
args=()
for a in "$@"; do
    if [[ "$a" == "--no-infer-check" ]]; then infer=0; else args+=("$a"); fi
done
# A failed window must not cost the call its inference check (it needs no trained weights):
# its exit status is kept and returned at the end.
status=0
"$python" -m deblur_cli.training.window --config configs/train/gpu-saphn-s.toml --photos data/carry/photos \
    --out "$out" "${args[@]}" || status=$?
if [[ "$infer" == 1 ]]; then
    # A failed check must not lose the trained weights already in $OUT: report it and go on.
    timeout 150 "$python" tools/accelerator/infer_check.py --out "$out" || echo "inference check failed (exit $?)"
fi
exit "$status"
