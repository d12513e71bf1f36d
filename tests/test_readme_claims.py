"""The README and docs quote the committed reports: every interval docs/results.md (and the
cpu2-smol pilot's result in docs/cpu-preset.md) prints is a cell of the report it cites, the
README's summary table gives each headline finding's effect and verdict as the reports do, and
every relative link in README.md and docs/ resolves, so the prose cannot drift from the numbers
behind it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INTERVAL = re.compile(r"-?\d+\.\d\s+\[-?\d+\.\d,\s+-?\d+\.\d\]")  # a line may break inside one
LINK = re.compile(r"\]\(([^)\s]+)\)")


SMOL = ["report-cpu2-smol/README.md", "report-cpu2/README.md"]


@pytest.mark.parametrize("doc, start, end, reports, least", [
    ("results.md", "### The `cpu2` instrument", "### The `cpu` preset", ["report-cpu2/README.md"], 10),
    ("results.md", "### The `cpu` preset", None, ["report/README.md", "report/lr1e-3/README.md"], 10),
    ("results.md", "# Where the reproduction stands", "### The `cpu2` instrument", SMOL, 4),
    ("cpu-preset.md", "### The result:", None, SMOL, 12),
])
def test_intervals_the_docs_quote_are_report_cells(doc, start, end, reports, least):
    page = (ROOT / "docs" / doc).read_text()
    section = page[page.index(start):page.index(end) if end else None]
    cells = "".join((ROOT / r).read_text() for r in reports)
    quoted = [" ".join(q.split()) for q in INTERVAL.findall(section)]
    assert len(quoted) >= least
    missing = [q for q in quoted if q not in cells]
    assert not missing, missing


def _primary(report: str) -> dict[str, tuple[str, str]]:
    """{contrast's first words: (effect [CI], verdict)} of a report's primary family."""
    text = (ROOT / report).read_text()
    rows = text[text.index("### Primary family"):text.index("### Secondary family")].splitlines()
    cells = [[c.strip() for c in row.strip("|").split(" | ")] for row in rows if row.startswith('| "')]
    return {c[1]: (c[3], c[-1].strip("*")) for c in cells}


def test_the_readme_summary_gives_each_headline_finding_as_the_reports_do():
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| the paper's claim |"):readme.index("Reports: ")]
    rows = [[c.strip() for c in row.strip("|").split(" | ")] for row in table.splitlines()[2:] if row.strip()]
    checked = 0
    for column, report in ((3, "report-cpu2/README.md"), (4, "report/README.md")):
        findings = _primary(report)
        for row in rows:
            cell = row[column]
            interval = INTERVAL.match(cell)
            if interval is None:
                continue
            verdict = cell[interval.end():].strip()
            matches = [v for contrast, v in findings.items() if v[0] == interval.group(0)]
            assert matches and matches[0][1] == verdict, (report, row[0], cell, findings)
            checked += 1
    assert checked >= 12


def _anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a markdown file's headings."""
    slugs = set()
    for heading in re.findall(r"^#+ (.+)$", markdown, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        slugs.add(slug)
    return slugs


def test_every_relative_link_in_the_readme_and_docs_resolves():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in LINK.findall(page.read_text()):
            if re.match(r"^(https?:|mailto:)", target):
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.name}: {target}")
            elif anchor and file.suffix == ".md" and anchor not in _anchors(file.read_text()):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert len(pages) >= 9 and not broken, broken
