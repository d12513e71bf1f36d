"""`make bench`: run every benchmark in this folder; each updates its RESULTS.md section."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

here = Path(__file__).parent
# each script with its default arguments, and the paper-scale training path at its CPU size
runs = [[script.name] for script in sorted(here.glob("bench_*.py"))]
runs.append(["bench_train.py", "--preset", "paper", "--random-weights", "--scale", "tiny"])
runs.append(["bench_generate.py", "--random-weights", "--scale", "tiny", "--images", "8"])
failed = []
for args in runs:
    print(f"== {' '.join(args)}", flush=True)
    if subprocess.run([sys.executable, *args], cwd=here).returncode != 0:
        failed.append(" ".join(args))
if failed:
    sys.exit(f"failed: {', '.join(failed)}")
