#!/usr/bin/env bash
# Every GPU check of the paper-scale path in one run (estimated at 8-12 minutes on one H100-class GPU,
# never yet measured, a few more on an H200, where llava-stage2 runs; ONLY="train generate ..." runs
# those steps alone):
#   versions   torch, its CUDA build, the driver, transformers / accelerate / peft
#   plan       the memory plan of configs/paper/VQ-VQ.yaml for this GPU
#   llava-plan Table 2's two stages (CLIP-VQ) planned for 8 GPUs of this one's memory (llava-plan-paper:
#              the same with --recipe paper, CLIP trained in stage 2)
#   llava-stage2  Table 2's stage 2 at 7B shape (random weights, CLIP frozen and trained) on this GPU
#              where the plan says one holds it (an H200 does, an H100 does not): samples/s and peak
#              memory against the plan (bench_llava.py)
#   train      the paper preset's training loop on a Vicuna-7B-shaped Llama with random weights and
#              synthetic SigLIP-base / VQ-16 outputs: samples/s, peak memory allocated and reserved
#              beside the memory plan's figure, MFU (bench_train.py)
#   throughput the throughput knobs on and off at Vicuna-7B's widths with 4 layers (SDPA vs eager
#              attention, LoRA in 16 bits, checkpointing, torch.compile), each with a profiler split of
#              the step into GEMM/attention kernels and the rest (bench_throughput.py)
#   generate   16 KV-cached image generations of 256 VQ tokens against the authors' uncached loop
#   paper-path the paper preset's code path on tiny random models saved in the real formats, on
#              this device: training, resume, evaluation, VQ decoding to pixels (test_paper_shape.py).
#              Its resume check is bit-exact: cuBLAS runs with a fixed workspace here so that a GEMM
#              repeats its bits; a failure that names another kernel is a nondeterministic one (log)
#   probe      the Fig 7 probe's hand-over between CPU encoders and a GPU model
#   tokenizer  Vicuna's tokenizer, where it is in the HF cache (skipped otherwise)
#   smol       the smol preset's step (SmolLM2-135M + LoRA, synthetic SigLIP-base / VQ-16 outputs) at
#              its own batch, micro-batches chosen to fit
#   padding    padding per step with micro-batches grouped by length (bench_padding.py)
#   2-process  DDP and FSDP across two GPUs against one process (tests/test_distributed.py),
#              where there are two (skipped otherwise; on the CPU in --dry-run)
# `--dry-run` runs every step at tiny scale on the CPU, results to a scratch RESULTS.md; CI runs it
# so that the script cannot rot. No `set -e`: each step is logged, the table is written even when
# a step fails, and the exit code says whether all passed; the step table is also recorded in
# RESULTS.md (section gpu_check; the scratch file in --dry-run). Nothing is downloaded.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
if [ -x .venv/bin/python ]; then PY=${PY:-.venv/bin/python}; else PY=${PY:-python3}; fi
LOG=${LOG:-/tmp/uvlm-gpu-check}
mkdir -p "$LOG"
export UVLM_CACHE=${UVLM_CACHE:-$LOG/cache} PYTHONUNBUFFERED=1
# the bit-exact checks only (paper-path, 2-process): a fixed cuBLAS workspace, so a GEMM repeats its bits
EXACT=(env CUBLAS_WORKSPACE_CONFIG=:4096:8)
SCALE=paper IMAGES=16 REFERENCE=2 GPU_GB=80 SMOL=(--steps 10 --synthetic-encoders paper)
THROUGHPUT=(--layers 4 --records 8)
if [ "$DRY" = 1 ]; then
    SCALE=tiny IMAGES=1 REFERENCE=1 SMOL=(--steps 3 --batch 2 --synthetic-encoders tiny)
    THROUGHPUT=(--tiny --layers 1 --records 2)
    export UVLM_BENCH_RESULTS="$LOG/RESULTS.md"
    rm -f "$UVLM_BENCH_RESULTS"  # the table below shows this run's, not an earlier one's
else
    GPU_GB=$($PY -c "import torch; print(round(torch.cuda.get_device_properties(0).total_memory / 1e9))")
fi

ROWS=() FAILED=0
skip() {  # skip NAME WHY: a row for a step this machine cannot run
    echo "== $1: skipped ($2)"
    ROWS+=("| $1 | skipped ($2) | 0 s |")
}
step() {  # step NAME COMMAND...: run it, log it, add its row to the table
    local name=$1 start code
    shift
    if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then skip "$name" "not in ONLY"; return; fi
    start=$(date +%s)
    echo "== $name: $*"
    "$@" > "$LOG/$name.log" 2>&1
    code=$?
    tail -n 3 "$LOG/$name.log"
    if [ "$code" = 0 ]; then ROWS+=("| $name | ok | $(( $(date +%s) - start )) s |");
    else ROWS+=("| $name | FAILED (exit $code; $LOG/$name.log) | $(( $(date +%s) - start )) s |"); FAILED=1; fi
}

step versions $PY -c "import torch, transformers, accelerate, peft, subprocess
print('torch', torch.__version__, 'cuda build', torch.version.cuda, 'gpus', torch.cuda.device_count())
print('transformers', transformers.__version__, 'accelerate', accelerate.__version__, 'peft', peft.__version__)
if torch.cuda.is_available():
    print(subprocess.run(['nvidia-smi', '--query-gpu=name,memory.total,driver_version', '--format=csv,noheader'],
                         capture_output=True, text=True).stdout.strip())"
step plan $PY -m uvlm.cli plan configs/paper/VQ-VQ.yaml --gpu-mem "$GPU_GB"
step llava-plan $PY -m uvlm.cli llava plan --model CLIP-VQ --gpus 8 --gpu-mem "$GPU_GB"
step llava-plan-paper $PY -m uvlm.cli llava plan --model CLIP-VQ --gpus 8 --gpu-mem "$GPU_GB" --recipe paper
step llava-stage2 $PY benchmarks/bench_llava.py --scale "$SCALE"
step train $PY benchmarks/bench_train.py --preset paper --random-weights --scale "$SCALE" --steps "${STEPS:-4}"
step throughput $PY benchmarks/bench_throughput.py "${THROUGHPUT[@]}"
step generate $PY benchmarks/bench_generate.py --random-weights --scale "$SCALE" --images "$IMAGES" \
    --reference-images "$REFERENCE"
step paper-path "${EXACT[@]}" $PY -m pytest -q -p no:cacheprovider tests/test_paper_shape.py
step probe $PY -m pytest -q -p no:cacheprovider tests/test_suites.py -k "probe_hands"
if $PY -c "from transformers import AutoTokenizer; AutoTokenizer.from_pretrained('lmsys/vicuna-7b-v1.5', local_files_only=True)" \
        > /dev/null 2>&1; then
    step tokenizer $PY -c "from uvlm.train.build import build_tokenizer; from uvlm.train.config import from_dict
from uvlm.suites.presets import row_config; t = build_tokenizer(from_dict(row_config('paper', 'VQ-VQ'))); print(len(t), 'tokens')"
else
    skip tokenizer "lmsys/vicuna-7b-v1.5 is not in the HF cache"
fi
step smol $PY benchmarks/bench_train.py --preset smol-standin "${SMOL[@]}"
step padding $PY benchmarks/bench_padding.py
GPUS=$($PY -c "import torch; print(torch.cuda.device_count())")
if [ "$DRY" = 1 ] || [ "$GPUS" -ge 2 ]; then
    step 2-process "${EXACT[@]}" $PY -m pytest -q -p no:cacheprovider tests/test_distributed.py \
        -k "equal_one_at_any_micro_batch and VQ-VQ or sharded_run_equals_one"
else
    skip 2-process "$GPUS GPU"
fi

TABLE=$(printf '| step | result | time |\n|---|---|---|\n'; printf '%s\n' "${ROWS[@]}")
echo
echo "$TABLE"
($PY -c "import sys
sys.path.insert(0, 'benchmarks')
from common import record
record('gpu_check', 'bash benchmarks/gpu_check.sh${1:+ $1}', 'Each step of the run, its result and its time '
       '(logs in $LOG/STEP.log; the steps are listed at the top of the script).\n\n' + sys.stdin.read())" \
    > /dev/null <<< "$TABLE") || FAILED=1
[ -f "${UVLM_BENCH_RESULTS:-benchmarks/RESULTS.md}" ] && $PY - "${UVLM_BENCH_RESULTS:-benchmarks/RESULTS.md}" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
for name in ("bench_train (paper, ", "bench_generate (paper", "bench_train (smol-standin", "bench_train (cpu)",
             "bench_throughput", "bench_padding", "bench_llava"):
    for section in re.findall(rf"^## {re.escape(name)}.*?(?=^## |\Z)", text, re.S | re.M):
        print(section.strip(), "\n")
PY
exit $FAILED
