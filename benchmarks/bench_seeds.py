"""Target 4 of the cpu instrument: is seed noise small enough to see 3-point effects?

Reads a results folder (default: the committed `results/`) and, per row of table A3, the VQA
total of each seed, its seed SD with a 95% chi-square interval (3 seeds: x0.52 to x6.3), and
the minimum detectable effect between two such rows (uvlm.suites.stats.minimum_detectable_effect:
seed-level Welch, power 80%) at the row's seed count, two-sided 5%, and at the levels verdicts
use: Holm's first step in the folder's primary and secondary families (0.05 / their sizes, as
the report tests them); and at 3, 5 and 10 seeds at the primary level. Target: seed SD of the
total <= 2 points for every A3 row.

    python benchmarks/bench_seeds.py [RESULTS_FOLDER] [--table A3]
"""

from __future__ import annotations

from common import markdown_table, per_folder, record, results_table_args

from uvlm.suites.findings import tested
from uvlm.suites.results import Results
from uvlm.suites.stats import ALPHA, minimum_detectable_effect, seed_sd


def main() -> None:
    args, folder = results_table_args(__doc__)
    res = Results(args.results)
    sizes = {t.primary: t.family_size for t in tested(res)}
    primary, secondary = max(sizes.get(True, 1), 1), max(sizes.get(False, 1), 1)
    levels = (ALPHA, ALPHA / primary, ALPHA / secondary)
    rows = []
    for label in res.labels(args.table):
        scores = res.scores(args.table, label, "total_acc")
        if scores is None:
            continue
        per_seed = scores.mean(axis=1)
        seeds = " / ".join(f"{v:.1f}" for v in per_seed)
        if len(per_seed) < 2:  # one seed has no spread to measure: no verdict either way
            rows.append([label, 1, seeds, "-", "-", "-", "-", "-", "-", "-", "- (one seed)"])
            continue
        sd, low, high = seed_sd(scores)
        k = len(per_seed)
        mde = [minimum_detectable_effect(sd, k, alpha=a) for a in levels]
        mde += [minimum_detectable_effect(sd, n, alpha=ALPHA / primary) for n in (3, 5, 10)]
        rows.append([label, k, seeds, f"{sd:.1f} [{low:.1f}, {high:.1f}]", *(f"{v:.1f}" for v in mde),
                     "yes" if sd <= 2 else "no"])
    body = (f"`{folder}`, table {args.table}, VQA total per seed (percent); seed SD with its 95% interval. MDE: "
            "the smallest true difference between two rows with this seed SD that a two-sided seed-level test "
            f"finds 80% of the time, at 5%, at 0.05 / {primary} (Holm's first step in the primary family) and at "
            f"0.05 / {secondary} (in the secondary family).\n\n"
            + markdown_table(["row", "seeds", "total per seed", "seed SD [95% CI]", "MDE 5%", f"MDE 0.05/{primary}",
                              f"MDE 0.05/{secondary}", f"MDE 0.05/{primary} at 3", "at 5", "at 10", "SD <= 2"], rows))
    if not rows:
        raise SystemExit(f"{args.results} has no evaluated rows of table {args.table}")
    record(per_folder("bench_seeds", folder), f"python benchmarks/bench_seeds.py {folder} --table {args.table}", body)


if __name__ == "__main__":
    main()
