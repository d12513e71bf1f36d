"""Target 3 of the cpu instrument: are time and battery learnable (and not given away)?

Reads a results folder (default: the committed `results/`) and, for the understanding-only rows
of table A3 and their step-matched controls (baseline rows: reading them decides nothing the
study then measures), each attribute's VQA score as the report shows it: mean over seeds with
its 95% interval (uvlm.suites.stats), beside a random answer and the best constant answer
computed from the same test questions. An attribute is "learned" when the interval's low end
clears the best constant answer. Target: time and battery learned by the step-matched `_u`
rows; the plain `_u` rows may stay lower (the paper's regime).

    python benchmarks/bench_attributes.py [RESULTS_FOLDER] [--table A3]
"""

from __future__ import annotations

from common import markdown_table, per_folder, record, results_table_args

from uvlm.model.names import parse_name
from uvlm.suites.results import Results
from uvlm.suites.stats import cell_interval

COLUMNS = ("time_acc", "battery_acc", "weather_acc", "position_acc")


def main() -> None:
    args, folder = results_table_args(__doc__)
    res = Results(args.results)
    chance = res.chance(args.table)
    if chance is None:
        raise SystemExit(f"{args.results} has no evaluated rows of table {args.table}")
    rows = [["*random answer*", "", *(f"{chance['random'][c]:.1f}" for c in COLUMNS), ""],
            ["*best constant answer*", "", *(f"{chance['constant'][c]:.1f}" for c in COLUMNS), ""]]
    for label in res.labels(args.table):
        if parse_name(label.split(" ")[0]).tasks != "understanding":
            continue
        cells, learned = [], []
        for c in COLUMNS:
            scores = res.scores(args.table, label, c)
            cell = cell_interval(scores)
            # shown within 0-100, as the report shows it
            cells.append(f"{cell.mean:.1f} [{max(cell.low, 0.0):.1f}, {min(cell.high, 100.0):.1f}]")
            if c in ("time_acc", "battery_acc"):
                learned.append(cell.low > chance["constant"][c])
        seeds = len(res.groups[(args.table, label)])
        rows.append([label, seeds, *cells, " / ".join("yes" if x else "no" for x in learned)])
    body = (f"`{folder}`, table {args.table}, understanding-only rows: VQA score per attribute (percent), mean "
            "over seeds [95% interval over seeds and questions, shown within 0-100]. Learned: the interval's low "
            "end clears the best constant answer.\n\n"
            + markdown_table(["row", "seeds", *(c.removesuffix("_acc") for c in COLUMNS),
                              "learned: time / battery"], rows))
    record(per_folder("bench_attributes", folder),
           f"python benchmarks/bench_attributes.py {folder} --table {args.table}", body)


if __name__ == "__main__":
    main()
