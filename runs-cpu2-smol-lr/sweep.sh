#!/usr/bin/env bash
# The cpu2-smol pilot's learning rate, chosen on VQ_u alone (seed 0; its A3 VQA total on the test
# set's 1,000 questions): LoRA and adapters at the same rate.
# 2e-4 and 1e-3 run side by side, one thread each; 5e-4 then runs alone on both threads, so no
# core idles (the thread count changes only the order of float sums, not what is trained).
# Rerun to resume: a finished run is skipped, an interrupted one resumes from its checkpoint.
# Exit status: non-zero when any run failed (its log, a.log or b.log, says why).
cd "$(dirname "$0")/.." || exit 1
# an eighth of cpu2's records, where the pilot began (the preset has a quarter since: see pilot.sh)
eighth=(--set data.train.n_vqa=1500 --set data.train.n_caption=1500 --set data.train.n_generation=2250)
one() {
  local lr=$1 threads=$2 out=runs-cpu2-smol-lr/VQ_u-lr$1
  [ -f "$out/eval/metrics.json" ] && return
  .venv/bin/uvlm train --config configs/cpu2-smol/VQ_u.yaml --out "$out" --resume "${eighth[@]}" \
      --set train.lr="$lr" --set train.adapter_lr="$lr" --set train.threads="$threads" \
    && .venv/bin/uvlm eval "$out"
}
one 2e-4 1 >> runs-cpu2-smol-lr/a.log 2>&1 &
first=$!
one 1e-3 1 >> runs-cpu2-smol-lr/b.log 2>&1
second=$?
wait "$first"
first=$?
one 5e-4 2 >> runs-cpu2-smol-lr/a.log 2>&1
exit $(( $? || first || second ))
