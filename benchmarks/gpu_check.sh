#!/usr/bin/env bash
# Every GPU check of the paper-scale path, in one run (about 5-8 minutes on one H100-class GPU):
#   1. the paper preset's training loop on a Vicuna-7B-shaped Llama with random weights and
#      synthetic SigLIP-base / VQ-16 outputs: samples/s per GPU, peak memory, MFU, for VQ-VQ
#      and SigLIP-SigLIP (global batch 393 by accumulation on this one GPU);
#   2. 16 KV-cached image generations of 256 VQ tokens against the authors' uncached loop;
#   3. the memory plan of configs/paper/VQ-VQ.yaml for this GPU.
# Nothing is downloaded. Results go to benchmarks/RESULTS.md and are printed as one table.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
export UVLM_CACHE=${UVLM_CACHE:-/tmp/uvlm-gpu-check-cache} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
gpu_gb=$($PY -c "import torch; print(round(torch.cuda.get_device_properties(0).total_memory / 1e9))")
$PY -m uvlm.cli plan configs/paper/VQ-VQ.yaml --gpu-mem "$gpu_gb"
$PY benchmarks/bench_train.py --preset paper --random-weights --scale paper --steps "${STEPS:-4}"
$PY benchmarks/bench_generate.py --random-weights --scale paper --images 16 --reference-images 2
$PY - <<'PY'
import re
text = open("benchmarks/RESULTS.md").read()
for name in ("bench_train (paper, paper)", "bench_generate (paper)"):
    section = re.search(rf"^## {re.escape(name)}\n.*?(?=^## |\Z)", text, re.S | re.M)
    print(section.group(0).strip() if section else f"## {name}: missing", "\n")
PY
