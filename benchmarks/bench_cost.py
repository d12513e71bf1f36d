"""Target 5 of the cpu instrument: is the study affordable?

Reads a results folder (default: the committed `results/`) and measures, from each finished run's
wall.json (train + eval, one thread):
- every unified run of table A3 in minutes of one core: median and slowest, against 30;
- mutual + transfer-weather at 3 seeds in hours on 2 cores (runs go two at a time, so half their
  one-core hours), against 16: measured once both suites are complete, estimated before that the
  way the report's cost section estimates (uvlm.suites.report.suite_costs).

    python benchmarks/bench_cost.py [RESULTS_FOLDER]
"""

from __future__ import annotations

import numpy as np
from common import markdown_table, per_folder, record, results_table_args

from uvlm.model.names import parse_name
from uvlm.suites.report import suite_costs
from uvlm.suites.results import Results

RUN_MINUTES, STUDY_HOURS = 30, 16  # the targets: one unified run on one core; the pair on 2 cores
STUDY = ("mutual", "transfer-weather")


def main() -> None:
    args, folder = results_table_args(__doc__)
    res = Results(args.results)
    wall = res.wall()
    minutes = {}  # unified A3 row -> minutes of each finished run
    for label in res.labels("A3"):
        done = [wall[k] / 60 for k in res.groups[("A3", label)] if k in wall]
        if done and parse_name(label.split(" ")[0]).tasks == "both":
            minutes[label] = done
    if not minutes:
        raise SystemExit(f"{args.results} has no finished unified run of table A3")
    every = [m for runs in minutes.values() for m in runs]
    costs = {c.name: c for c in suite_costs(res, wall)[0]}
    suites, hours = [], {}  # hours: one-core hours of each study suite at 3 seeds, spent or estimated
    for name in STUDY:
        if (c := costs.get(name)) is None:
            suites.append([name, 0, "-", "-", "-", "not run"])
            continue
        complete = c.done >= c.planned
        hours[name] = c.spent_hours if complete else c.estimate_hours
        suites.append([name, f"{c.done} of {c.planned}", f"{c.spent_hours:.1f}", f"{hours[name]:.1f}",
                       f"{hours[name] / 2:.1f}", "measured" if complete else "estimated"])
    pair = sum(hours.values()) / 2
    kind = "measured" if all(row[5] == "measured" for row in suites) else "estimated"
    study = (f"mutual + transfer-weather at 3 seeds: {pair:.1f} h on 2 cores ({kind}; target <= "
             f"{STUDY_HOURS}: {'met' if pair <= STUDY_HOURS else 'not met'})" if len(hours) == len(STUDY)
             else "mutual + transfer-weather: not both run")
    median = float(np.median(every))
    verdict = "met" if max(every) <= RUN_MINUTES else "met in the median" if median <= RUN_MINUTES else "not met"
    per_row = [[label, len(runs), " / ".join(f"{m:.1f}" for m in runs)] for label, runs in minutes.items()]
    body = (f"`{folder}`: unified runs of table A3, minutes of one core each (train + eval, wall.json); "
            f"median {median:.1f}, slowest {max(every):.1f} (target <= {RUN_MINUTES}: {verdict}; "
            f"{sum(m <= RUN_MINUTES for m in every)} of {len(every)} runs within it).\n\n"
            + markdown_table(["row", "runs", "minutes per run"], per_row) + "\n\n"
            + markdown_table(["suite", "runs done", "one-core hours spent", "one-core hours at 3 seeds",
                              "hours on 2 cores", "hours are"], suites)
            + f"\n\n{study}. A complete suite's hours are what its runs spent; an incomplete one is priced "
            "at the median seconds per training record of its finished runs.")
    record(per_folder("bench_cost", folder), f"python benchmarks/bench_cost.py {folder}", body)


if __name__ == "__main__":
    main()
