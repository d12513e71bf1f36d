"""The README's results quote the committed reports: every interval its cpu2 and cpu sections
print is a cell of the report they cite, so the prose cannot drift from the numbers behind it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INTERVAL = re.compile(r"-?\d+\.\d \[-?\d+\.\d, -?\d+\.\d\]")


@pytest.mark.parametrize("start, end, reports", [
    ("### The `cpu2` instrument", "### The `cpu` preset", ["report-cpu2/README.md"]),
    ("### The `cpu` preset", "## The SmartWatch dataset", ["report/README.md", "report/lr1e-3/README.md"]),
])
def test_intervals_in_the_readme_results_are_report_cells(start, end, reports):
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index(start):readme.index(end)]
    cells = "".join((ROOT / r).read_text() for r in reports)
    quoted = INTERVAL.findall(section)
    assert len(quoted) > 10
    missing = [q for q in quoted if q not in cells]
    assert not missing, missing
