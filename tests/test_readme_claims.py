"""The README's cpu2 results quote the committed report: every interval it prints is a cell of
report-cpu2/README.md, so the prose cannot drift from the numbers behind it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INTERVAL = re.compile(r"-?\d+\.\d \[-?\d+\.\d, -?\d+\.\d\]")


def test_cpu2_intervals_in_the_readme_are_report_cells():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### The `cpu2` instrument"):readme.index("### The `cpu` preset")]
    report = (ROOT / "report-cpu2" / "README.md").read_text()
    quoted = [m.lstrip("+") for m in INTERVAL.findall(section)]
    assert len(quoted) > 20
    missing = [q for q in quoted if q not in report]
    assert not missing, missing
