"""Target 4 of the cpu instrument: is seed noise small enough to see 3-point effects?

Reads a results folder (default: the committed `results/`) and, per row of table A3, the VQA
total of each seed, its seed SD, and the minimum detectable effect between two such rows
(uvlm.suites.stats.minimum_detectable_effect: two-sided 5%, power 80%) at the row's seed count
and at 3, 5 and 10 seeds. Target: seed SD of the total <= 2 points for every A3 row.

    python benchmarks/bench_seeds.py [RESULTS_FOLDER] [--table A3]
"""

from __future__ import annotations

from common import markdown_table, per_folder, record, results_table_args

from uvlm.suites.results import Results
from uvlm.suites.stats import minimum_detectable_effect


def main() -> None:
    args, folder = results_table_args(__doc__)
    res = Results(args.results)
    rows = []
    for label in res.labels(args.table):
        scores = res.scores(args.table, label, "total_acc")
        if scores is None:
            continue
        per_seed = scores.mean(axis=1)
        seeds = " / ".join(f"{v:.1f}" for v in per_seed)
        if len(per_seed) < 2:  # one seed has no spread to measure: no verdict either way
            rows.append([label, 1, seeds, "-", "-", "-", "-", "-", "- (one seed)"])
            continue
        sd = float(per_seed.std(ddof=1))
        mde = [minimum_detectable_effect(sd, k) for k in (len(per_seed), 3, 5, 10)]
        rows.append([label, len(per_seed), seeds, f"{sd:.1f}", *(f"{v:.1f}" for v in mde), "yes" if sd <= 2 else "no"])
    body = (f"`{folder}`, table {args.table}, VQA total per seed (percent). MDE: the smallest true difference "
            "between two rows with this seed SD that a two-sided 5% test finds 80% of the time.\n\n"
            + markdown_table(["row", "seeds", "total per seed", "seed SD", "MDE at its seeds", "MDE at 3",
                              "MDE at 5", "MDE at 10", "SD <= 2"], rows))
    if not rows:
        raise SystemExit(f"{args.results} has no evaluated rows of table {args.table}")
    record(per_folder("bench_seeds", folder), f"python benchmarks/bench_seeds.py {folder} --table {args.table}", body)


if __name__ == "__main__":
    main()
