"""A results folder read back: finished runs grouped by (table, row label), their scores, and
the paper's numbers for the same rows (shipped in the package as paper_tables.json).

Every number comes from the runs' own files (eval/metrics.json, answers.jsonl,
generation.jsonl, probe/probe.json, wall.json); nothing is typed in. Chance is computed from
the test questions' true answers in answers.jsonl, and the judge's baselines come from the
runs' metrics.json (or, for runs evaluated before they were recorded, from baselines.json in
the results folder; see `Results.judge_baselines`).
"""

from __future__ import annotations

import json
from collections import defaultdict
from importlib import resources
from pathlib import Path

import numpy as np

from uvlm.data.celeba import ATTRIBUTES as FACE_ATTRIBUTES
from uvlm.errors import UvlmError
from uvlm.eval.chance import chance
from uvlm.io import atomic_write_json, read_json, read_jsonl
from uvlm.model.names import parse_name
from uvlm.suites.runner import job_index, probe_folder, run_folders, wall_seconds
from uvlm.suites.spec import identity_of, scaling_label, scaling_rows

COLUMNS = {"time_acc": ("time",), "weather_acc": ("weather",), "position_acc": ("weather_pos", "battery_pos"),
           "battery_acc": ("battery",), "total_acc": ("time", "weather", "weather_pos", "battery", "battery_pos")}
FACE_COLUMNS = {**{f"{a}_acc": (a,) for a in FACE_ATTRIBUTES}, "total_acc": FACE_ATTRIBUTES}
CELEBA = "-celeba"  # the suffix of a table run on CelebA (Table 1's second half)
KEY_COLUMN = {"A3": "total_acc", "A5": "weather_acc", "A6": "battery_acc"}  # what each table's figure shows
PAPER_TABLES = {"A3": "A3_smartwatch_mutual", "A4": "A4_smartwatch_scaling", "A5": "A5_weather_biased",
                "A6": "A6_battery_biased", "T1": "T1_affine", "T1-celeba": "T1_affine", "A3-celeba": "T1_affine"}
TITLES = {"A3": "Table A3: mutual benefits (default mix)", "A5": "Table A5: weather-biased understanding data",
          "A6": "Table A6: battery-biased understanding data", "T1": "Table 1 (SmartWatch half): affine map",
          "T1-celeba": "Table 1 (CelebA half): affine map",
          "A3-celeba": "Table A3 on CelebA (the paper's totals: Table 1's CelebA column, starred rows with the map)",
          "A4": "Table A4: scaling",
          "A4-celeba": "Table A4 on CelebA: scaling (the paper draws it in Fig 4's CelebA panels, without numbers)",
          "dose-weather": "Dose-response: share of VQA asking weather (ours)",
          "dose-battery": "Dose-response: share of VQA asking battery (ours)", "fig7": "Fig 7 probe"}


def columns(table: str) -> dict[str, tuple[str, ...]]:
    """A table's VQA columns and the attributes each pools: SmartWatch's, or CelebA's seven."""
    return FACE_COLUMNS if table.endswith(CELEBA) else COLUMNS


def dataset_of(table: str) -> str:
    return "celeba" if table.endswith(CELEBA) else "smartwatch"


def paper_rows(paper: dict, table: str) -> dict[str, dict]:
    """The paper's rows of one of our tables, by our row label."""
    rows = paper.get(PAPER_TABLES.get(table, ""), {}).get("rows", {})
    if table == "A4":  # a list of sweep points; both models' 0K-understanding cells are VQ_g's
        return {scaling_label(r["model"], r["und_k"], r["gen_k"]): r for r in rows}
    if table in ("T1", "T1-celeba", "A3-celeba"):  # [without, with] the affine map, per dataset
        half = "ca" if table.endswith(CELEBA) else "sw"
        out = {}
        for name, r in rows.items():
            for distorted, label in enumerate((name, with_affine(name))):
                if label is not None:
                    out[label] = {"total_acc": (r[f"{half}_vqa"] or [None, None])[distorted],
                                  "fid": (r[f"{half}_fid"] or [None, None])[distorted]}
        return out
    return rows


def with_affine(name: str) -> str | None:
    """The row name with the affine map on its input ("VQ-VQ" -> "VQ*-VQ"); None without an input."""
    arch = parse_name(name)
    if arch.input_space is None:
        return None
    first = name.split("-")[0].split("_")[0]
    return first + "*" + name[len(first):]


def output_space(label: str) -> str | None:
    """The output space ("siglip", "vq" or None) of a row label ("VQ-SigLIP p=0.2", ...)."""
    return parse_name(label.split(" ")[0]).output_space


def judge_bar(baselines: dict | None, column: str = "total_acc") -> float | None:
    """What a generated image must beat to show it follows its prompt: the best of the best
    constant answer, one constant image, and real images of other prompts."""
    if not baselines:
        return None
    values = [baselines[k][column] for k in ("best constant answer", "constant", "shuffled")
              if k in baselines and baselines[k].get(column) is not None]
    return max(values) if values else None


def paper_tables() -> dict:
    return json.loads(resources.files("uvlm.suites").joinpath("paper_tables.json").read_text())


def gen_protocol() -> int:
    """The judged-generation protocol `uvlm eval` records now (uvlm.eval.evaluate.GEN_PROTOCOL),
    imported when asked: the evaluator pulls transformers in, seconds that `suite status` and
    `suite run` need not pay."""
    from uvlm.eval.evaluate import GEN_PROTOCOL

    return GEN_PROTOCOL


class Results:
    """The finished runs of a results folder, grouped by (table, row label)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.groups: dict[tuple[str, str], list[str]] = defaultdict(list)
        index = job_index(self.root)
        self.planned = {(e["table"], e["label"]) for e in index}  # the rows a suite was asked for (`--rows`)
        runs = self.root / "runs"
        # a run another suite's job made under its own name: found by identity (uvlm.suites.runner.with_folders)
        folders = run_folders(self.root)
        for e in index:
            key = e["key"] if (runs / e["key"]).exists() else folders.get(identity_of(e["key"]), e["key"])
            if (runs / key / "eval" / "metrics.json").exists():
                self.groups[(e["table"], e["label"])].append(key)
        self._answers: dict[str, dict] = {}
        self._metrics: dict[str, dict] = {}
        self._generation: dict[str, dict[str, dict[str, float]] | None] = {}
        self._probe: dict[str, dict | None] = {}

    def tables(self) -> list[str]:
        return sorted({t for t, _ in self.groups}, key=lambda t: list(TITLES).index(t) if t in TITLES else 99)

    def labels(self, table: str) -> list[str]:
        found = [label for t, label in self.groups if t == table]
        if table.startswith("A4"):  # sweep order, not alphabetical ("gen 120K" before "gen 60K")
            order = scaling_rows()
            found.sort(key=lambda label: order.index(label) if label in order else len(order))
        return found

    def metrics(self, key: str) -> dict:
        if key not in self._metrics:
            path = self.root / "runs" / key / "eval" / "metrics.json"
            found = read_json(path, "metrics", f"evaluate the run again: `uvlm eval {path.parent.parent}`")
            if not isinstance(found, dict):
                raise UvlmError(f"metrics {path} is corrupt; evaluate the run again: `uvlm eval {path.parent.parent}`")
            self._metrics[key] = found
        return self._metrics[key]

    def answers(self, key: str) -> dict:
        """id -> (attribute, score) of a run's VQA answers, checked against its metrics.json: a
        truncated file would silently score the questions left."""
        if key not in self._answers:
            path = self.root / "runs" / key / "eval" / "answers.jsonl"
            fix = f"evaluate the run again: `uvlm eval {path.parent.parent}`"
            rows = read_jsonl(path, "answers", fix) if path.exists() else []
            try:
                answers = {r["id"]: (r["attribute"], float(r["score"])) for r in rows}
            except (KeyError, TypeError, ValueError):
                raise UvlmError(f"answers {path} is corrupt; {fix}") from None
            expected = ((self.metrics(key).get("vqa") or {}).get("n") or {}).get("total")
            if expected is not None and len(answers) != expected:
                raise UvlmError(f"answers {path} holds {len(answers)} answers, its metrics.json counts {expected}; "
                                f"{fix}")
            self._answers[key] = answers
        return self._answers[key]

    def vqa_scores(self, table: str, label: str, column: str) -> np.ndarray | None:
        """(seeds, questions) scores in percent for one column, questions in id order; every run
        of a row must have answered the same questions."""
        keys = self.groups.get((table, label), [])
        runs = [self.answers(k) for k in keys]
        if not runs or not runs[0]:
            return None
        for k, r in zip(keys, runs, strict=True):
            if r.keys() != runs[0].keys():
                raise UvlmError(f"{self.root / 'runs' / k / 'eval' / 'answers.jsonl'} answers other test questions "
                                f"than {keys[0]}; the runs of row {label} must share a test set")
        ids = sorted(i for i, (a, _) in runs[0].items() if a in columns(table)[column])
        return 100 * np.array([[r[i][1] for i in ids] for r in runs])

    def generation(self, key: str) -> dict[str, dict[str, float]] | None:
        """A run's judged scores per test prompt and named attribute (0-1), for the prompts it drew
        an image for, or None if it generated nothing. Read once per run: tables, verdicts and
        figures all ask for it."""
        if key not in self._generation:
            path = self.root / "runs" / key / "eval" / "generation.jsonl"
            scores = None
            if path.exists():
                rows = read_jsonl(path, "generations", f"evaluate the run again: `uvlm eval {path.parent.parent}`")
                scores = {r["id"]: {a: float(v) for a, v in r["scores"].items()} for r in rows}
            self._generation[key] = scores
        return self._generation[key]

    def _named(self, dataset: str) -> dict[str, list[str]]:
        """Prompt id -> the attributes it names, from every run of a dataset that drew its image."""
        named: dict[str, list[str]] = {}
        for (table, _), keys in self.groups.items():
            if dataset_of(table) == dataset:
                for k in keys:
                    for prompt, scores in (self.generation(k) or {}).items():
                        named.setdefault(prompt, list(scores))
        return named

    def gen_scores(self, table: str, label: str) -> np.ndarray | None:
        """(seeds, items) judged scores of a row's runs in percent, an item being one attribute a
        prompt named: their mean is pooled over attributes, as the judge's baselines are (and as
        metrics.json's judge total is where every prompt got an image; that total leaves out
        prompts without one). A prompt without an image scores 0 on each attribute it names (one
        item of 0 where no run of the folder drew it: its named attributes are not known here)."""
        keys = self.groups.get((table, label), [])
        runs = [self.generation(k) for k in keys]
        if not runs or any(r is None for r in runs):
            return None
        named = self._named(dataset_of(table))
        prompts = [f"test-generation-{j:06d}" for j in range(self.metrics(keys[0])["gen"]["n"])]
        items = [(p, a) for p in prompts for a in named.get(p, [""])]
        return 100 * np.array([[(run.get(p) or {}).get(a, 0.0) for p, a in items] for run in runs])

    def probe(self, key: str) -> dict | None:
        """A run's Fig 7 probe result (probe/probe.json), or None before the run is probed."""
        if key not in self._probe:
            run = self.root / "runs" / key
            path = probe_folder(run) / "probe.json"
            self._probe[key] = read_json(path, "probe", f"delete it and run `uvlm probe {run}`") \
                if path.exists() else None
        return self._probe[key]

    def probe_scores(self, table: str, label: str) -> np.ndarray | None:
        """(seeds, test images) correctness of the Fig 7 probe, in percent."""
        rows = []
        for k in self.groups.get((table, label), []):
            correct = (self.probe(k) or {}).get("correct")
            if correct is None:
                return None
            rows.append(correct)
        return 100 * np.array(rows, dtype=float) if rows else None

    def scores(self, table: str, label: str, column: str) -> np.ndarray | None:
        """(seeds, items) scores of a VQA column, of judged generation ("gen") or of the probe ("probe")."""
        if column == "gen":
            return self.gen_scores(table, label)
        if column == "probe":
            return self.probe_scores(table, label)
        return self.vqa_scores(table, label, column)

    def bar(self, table: str, label: str, column: str) -> float | None:
        """What a row's cell must clear to show it reads the attribute (a VQA column: the best
        constant answer) or follows its prompts ("gen": `judge_bar`); None where nothing is known."""
        if column == "gen":
            space = output_space(label)
            return judge_bar(self.judge_baselines(space, dataset_of(table))) if space else None
        found = self.chance(table) if column != "probe" else None
        return found["constant"].get(column) if found else None

    def chance(self, table: str) -> dict | None:
        """Chance on a table's test questions (uvlm.eval.chance), from the true answers its runs
        were scored against; None before any run of the table has answers."""
        for label in self.labels(table):
            for key in self.groups[(table, label)]:
                rows = self._answer_rows(key)
                if rows:
                    return chance((r["attribute"], r["ground_truth"]) for r in rows)
        return None

    def _answer_rows(self, key: str) -> list[dict]:
        path = self.root / "runs" / key / "eval" / "answers.jsonl"
        return read_jsonl(path, "answers", f"evaluate the run again: `uvlm eval {path.parent.parent}`") \
            if path.exists() else []

    def gen_valid(self, table: str, label: str) -> bool:
        """Whether a row's judged generation can be read: SigLIP outputs judged before the
        protocol that rescales generated vectors and reads them by direction cannot."""
        if output_space(label) != "siglip":
            return True
        return all((self.metrics(k).get("gen") or {}).get("protocol", 1) >= gen_protocol()
                   for k in self.groups.get((table, label), []))

    def judge_baselines(self, space: str, dataset: str = "smartwatch") -> dict | None:
        """What the judge of an output space gives real, shuffled and constant images (and the
        chance answers) on this folder's generation prompts of a dataset: recorded by `uvlm eval`
        in each run's metrics.json; for runs evaluated before that, kept in baselines.json
        (`store_baselines`)."""
        for (table, label), keys in self.groups.items():
            if output_space(label) == space and dataset_of(table) == dataset:
                for k in keys:
                    found = (self.metrics(k).get("gen") or {}).get("baselines")
                    if found and (space != "siglip" or self.metrics(k)["gen"].get("protocol", 1) >= gen_protocol()):
                        return found
        path = self.root / "baselines.json"  # SmartWatch runs evaluated before CelebA existed
        return read_json(path, "judge baselines", "delete it; `uvlm report` computes it again").get(space) \
            if path.exists() and dataset == "smartwatch" else None

    def store_baselines(self, space: str, baselines: dict) -> None:
        """Keep an output space's judge baselines in baselines.json (computed once, read by reports)."""
        path = self.root / "baselines.json"
        fix = "delete it; `uvlm report` computes it again"
        known = read_json(path, "judge baselines", fix) if path.exists() else {}
        atomic_write_json(path, {**known, space: baselines})

    def values(self, table: str, label: str, path: tuple[str, ...]) -> list[float]:
        out = []
        for k in self.groups.get((table, label), []):
            v = self.metrics(k)
            for p in path:
                v = v.get(p) if isinstance(v, dict) else None
            if isinstance(v, int | float):
                out.append(float(v))
        return out

    def finished(self) -> set[str]:
        """The keys of the evaluated runs (a run in two tables counts once)."""
        return {k for keys in self.groups.values() for k in keys}

    def wall(self) -> dict[str, float]:
        """Train + eval seconds of the finished runs that recorded them (wall.json)."""
        times = {k: wall_seconds(self.root, k) for k in self.finished()}
        return {k: t for k, t in times.items() if t is not None}
