#!/usr/bin/env bash
# The cpu2-smol pilot's learning rate, chosen on VQ_u alone (seed 0; its A3 VQA total on the test
# set's 1,000 questions): LoRA and adapters at the same rate, two runs at a time, one thread each.
# Rerun to resume: a finished run is skipped, an interrupted one resumes from its checkpoint.
# Exit status: non-zero when any run failed (its log, a.log or b.log, says why).
cd "$(dirname "$0")/.." || exit 1
one() {
  local lr=$1 out=runs-cpu2-smol-lr/VQ_u-lr$1
  [ -f "$out/eval/metrics.json" ] && return
  .venv/bin/uvlm train --config configs/cpu2-smol/VQ_u.yaml --out "$out" --resume \
      --set train.lr="$lr" --set train.adapter_lr="$lr" && .venv/bin/uvlm eval "$out"
}
(one 2e-4; first=$?; one 5e-4 && exit "$first") >> runs-cpu2-smol-lr/a.log 2>&1 &
chain=$!
one 1e-3 >> runs-cpu2-smol-lr/b.log 2>&1
alone=$?
wait "$chain"
exit $(( $? || alone ))
