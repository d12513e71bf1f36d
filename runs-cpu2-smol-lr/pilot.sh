#!/usr/bin/env bash
# The cpu2-smol pilot (docs/cpu-preset.md), start to end; rerun to resume after any stop.
# 1. the learning-rate runs (sweep.sh: skips finished runs, resumes interrupted ones);
# 2. the rate whose VQ_u scored the highest A3 VQA total (seed 0, test set; a tie goes to the
#    lower rate), decided by that rule alone, before any unified run exists;
# 3. VQ-VQ, VQ_u and VQ_u step-matched to VQ-VQ at 3 seeds at that rate, two runs at a time.
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
exec .venv/bin/uvlm suite run mutual --preset cpu2-smol --rows VQ-VQ,VQ_u --seeds 3 --workers 2 \
    --set train.lr="$lr" --set train.adapter_lr="$lr" --out results-cpu2-smol
