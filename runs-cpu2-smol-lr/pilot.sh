#!/usr/bin/env bash
# The cpu2-smol pilot (docs/cpu-preset.md), start to end; rerun to resume after any stop.
# 1. the learning-rate runs (sweep.sh: skips finished runs, resumes interrupted ones);
# 2. the rate whose VQ_u scored the highest A3 VQA total (seed 0, test set; a tie goes to the
#    lower rate), decided by that rule alone, before any unified run exists;
# 3. at an eighth of cpu2's records every VQ_u was at chance, so VQ_u alone (seed 0, that rate)
#    at a quarter of cpu2's records (3,000 VQA, 3,000 caption; 4,500 generation records made), on
#    both threads: what the cpu2-smol preset has held since (the runs below were first started
#    with these settings as --set, which gave the same configs and run keys);
# 4. only if that VQ_u's A3 total beats the best constant answer's by 5 points or more (sampling
#    error on 1,000 questions is about 3): VQ-VQ, VQ_u and VQ_u step-matched to VQ-VQ at 3 seeds
#    at that size and rate (estimated at about 11 hours; they took 13, docs/cpu-preset.md).
#    Otherwise the pilot stops here: about 12 hours of 2 cores do not train this LLM to read the
#    watch, and nothing is compared.
# The suite runs one run at a time on both threads (the same speed as two one-thread runs side by
# side): each run then finishes within a 3-hour session, since a session's machine keeps the runs'
# small files but not their checkpoints.
cd "$(dirname "$0")/.." || exit 1
runs-cpu2-smol-lr/sweep.sh || exit 1
lr=$(.venv/bin/python - <<'PY'
import json
from pathlib import Path

scores = {p.parts[-3].removeprefix("VQ_u-lr"): json.loads(p.read_text())["vqa"]["total_acc"]
          for p in sorted(Path("runs-cpu2-smol-lr").glob("VQ_u-lr*/eval/metrics.json"))}
if len(scores) != 3:
    raise SystemExit(f"the learning-rate runs are not all evaluated: {scores}")
print(min(scores, key=lambda lr: (-scores[lr], float(lr))))
PY
) || exit 1
echo "learning rate: $lr (VQ_u's A3 VQA total at each: see runs-cpu2-smol-lr/*/eval/metrics.json)"
out=runs-cpu2-smol-lr/VQ_u-quarter-lr$lr
if [ ! -f "$out/eval/metrics.json" ]; then
  .venv/bin/uvlm train --config configs/cpu2-smol/VQ_u.yaml --out "$out" --resume \
      --set train.lr="$lr" --set train.adapter_lr="$lr" >> runs-cpu2-smol-lr/a.log 2>&1 \
    && .venv/bin/uvlm eval "$out" >> runs-cpu2-smol-lr/a.log 2>&1 || exit 1
fi
.venv/bin/python - "$out/eval/metrics.json" <<'PY' || exit 0
import json
import sys

m = json.load(open(sys.argv[1]))
total, constant = m["vqa"]["total_acc"], m["chance"]["constant"]["total_acc"]
beats = total >= constant + 5
print(f"VQ_u at a quarter of cpu2's records: A3 total {total:.1f}, best constant answer {constant:.1f}: "
      f"{'beats' if beats else 'does not beat'} it by 5 points")
sys.exit(0 if beats else 1)
PY
[ "$lr" = 5e-4 ] || { echo "the suite below runs the preset's lr, 5e-4, not $lr" >&2; exit 1; }
exec .venv/bin/uvlm suite run mutual --preset cpu2-smol --rows VQ-VQ,VQ_u --seeds 3 --workers 1 --out results-cpu2-smol
