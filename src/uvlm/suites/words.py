"""The words a report may use for a result, decided by its statistics and nothing else.

A finding (a contrast with a Holm-adjusted p) "holds" or goes "against the paper" only when
its family's adjusted p is below 0.05; otherwise it is "inconclusive", or "both at chance"
("all at chance" for more rows) when no row it compares clears its chance bar, since then
the comparison is between two models that have not been shown to read the attribute. A cell
"reads it" only when its interval clears the best constant answer (or, for generation, the
judge's bar); otherwise it is "not shown" to.
"""

from __future__ import annotations

from uvlm.suites.stats import NO_VERDICT, Comparison, Interval

HOLDS, AGAINST, INCONCLUSIVE, READS, NOT_SHOWN = "holds", "against the paper", "inconclusive", "reads it", "not shown"


def phrase(result: Comparison | Interval, bar: float | None = None, rows_clear: list[bool] | None = None) -> str:
    """The words for a finding's comparison (`rows_clear`: whether each row it compares clears its
    chance bar, where known) or for a cell against its `bar`."""
    if isinstance(result, Interval):
        if bar is None:
            return ""
        return READS if result.low > bar else NOT_SHOWN
    if result.p_value is None:
        return NO_VERDICT
    if result.verdict == "reproduced":
        return HOLDS
    if result.verdict == "not reproduced":
        return AGAINST
    if rows_clear and not any(rows_clear):
        return "both at chance" if len(rows_clear) == 2 else "all at chance"
    return INCONCLUSIVE
