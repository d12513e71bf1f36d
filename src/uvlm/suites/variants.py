"""A researcher's own rows beside the paper's: a variants file read into jobs and comparisons.

    variants:
      - label: SigLIP-SigLIP image-loss 0.2   # the row's name: its base's name, a space, anything
        base: SigLIP-SigLIP                   # the paper row (a model name) it starts from
        table: A3                             # the table it joins: its data mix, suite and report table
        set: [model.image_loss_weight=0.2]    # config changes, on top of the preset and the folder's --set
        control: none                         # or step-matched (see Variant.jobs)
    comparisons:
      - better: SigLIP-SigLIP image-loss 0.2  # a row label, or a list of them (their mean)
        than: SigLIP-SigLIP
        column: total_acc                     # default: the table's own (A5: weather_acc, ...)
        text: a lighter image loss helps understanding   # optional

A variant's runs join the suite of its table (`uvlm suite run mutual --variants FILE`); the
report shows its rows in that table and its figure, and tests the comparisons as a family of
their own, Holm-adjusted apart from the paper's findings, which keep their families and p.
A sweep point is a variant too: `VQ-VQ p=0.1` in dose-weather with
`data.train.bias_vqa_prob=0.1`, or a record count in A4 with `data.train.n_generation=...`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from uvlm.errors import UvlmError
from uvlm.io import atomic_write_text, read_text_file
from uvlm.model.names import parse_name
from uvlm.suites.findings import Finding, mean_terms
from uvlm.suites.results import KEY_COLUMN, columns, output_space
from uvlm.suites.spec import Job, expand, matched, seed_config, step_matched

# The tables a variant can join: (the data mix its runs train on, the suites that run it)
TABLES = {"A3": ("default", ("mutual",)), "T1": ("default", ("affine",)), "A4": ("default", ("scaling",)),
          "A5": ("weather-biased", ("transfer-weather",)), "dose-weather": ("weather-biased", ("transfer-weather",)),
          "A6": ("battery-biased", ("transfer-battery",)), "dose-battery": ("battery-biased", ("transfer-battery",)),
          "fig7": ("weather-biased", ("transfer-weather", "probe"))}
CONTROLS = ("none", "step-matched")
# What a comparison compares unless it says: the score each table is about
DEFAULT_COLUMN = {**KEY_COLUMN, "dose-weather": "weather_acc", "dose-battery": "battery_acc", "fig7": "probe"}
FILE_NAME = "variants.yaml"  # a results folder's record of its variants
_VARIANT_KEYS = {"label", "base", "table", "set", "control"}
_COMPARISON_KEYS = {"better", "than", "column", "table", "text"}


# Model fields an understanding-only model never reads: a unified variant's step-matched control
# takes its `_u` row's values, so that it is the very run the paper's control is where it can be
GENERATION_FIELDS = ("image_loss_weight", "generation_adapter")


@dataclass(frozen=True)
class Variant:
    """One row of the researcher's own: a paper row's config with changes, in one of the tables."""

    label: str
    base: str
    table: str
    set: tuple[str, ...] = ()
    control: str = "none"

    @property
    def control_label(self) -> str | None:
        """The row label of its step-matched `_u` control (None without one)."""
        if self.control == "none":
            return None
        arch = parse_name(self.base)
        return matched(self.label) if arch.tasks == "understanding" else \
            f"{self.base.split('-')[0]}_u (step-matched to {self.label})"

    def jobs(self, preset: str, seeds: int, overrides: tuple[str, ...]) -> list[Job]:
        """Its runs, seed by seed (and its control's): the base row's config under the preset, the
        folder's --set, then its own changes."""
        mix = TABLES[self.table][0]
        out = []
        for seed in range(seeds):
            cfg = seed_config(preset, self.base, mix, seed, (*overrides, *self.set))
            out.append(Job(self.table, self.label, seed, cfg, probe=self.table == "fig7", variant=self.label))
            if self.control_label:
                understanding = self.base.split("-")[0] + "_u" if "-" in self.base else self.base
                row = seed_config(preset, understanding, mix, seed, overrides)["model"]
                model = {**cfg["model"], "name": understanding}
                for key in GENERATION_FIELDS:
                    model.pop(key, None)
                    if key in row:
                        model[key] = row[key]
                control = step_matched({**cfg, "model": model})
                out.append(Job(self.table, self.control_label, seed, control, variant=self.label))
        return out

    def identity(self, preset: str) -> str:
        """Its table and what its run is (seed 0, without the folder's --set): two rows alike are one."""
        return f"{self.table} {self.jobs(preset, 1, ())[0].identity}"


@dataclass(frozen=True)
class Variants:
    """A variants file: the rows and the comparisons the researcher wants."""

    rows: tuple[Variant, ...] = ()
    comparisons: tuple[Finding, ...] = ()
    source: str = ""  # where it was read from, for messages
    raw: dict = field(default_factory=dict, compare=False)  # as written, for the folder's record

    def jobs(self, suite: str, preset: str, seeds: int, overrides: tuple[str, ...]) -> list[Job]:
        """The runs of the variants whose table belongs to `suite` (every variant for `all`)."""
        return [j for v in self.rows if suite == "all" or suite in TABLES[v.table][1]
                for j in v.jobs(preset, seeds, overrides)]


def _fail(source: str, where: str, problem: str) -> UvlmError:
    return UvlmError(f"{source}: {where}: {problem} (see docs/variants.md)")


def _strings(value, source: str, where: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(x, str) and x.strip() for x in items):
        raise _fail(source, where, "give a row label or a list of them")
    return tuple(x.strip() for x in items)


def _variant(entry, source: str, i: int, preset: str) -> Variant:
    """One entry of `variants:`, checked as far as it can be alone: its runs' configs included."""
    where = f"variant {i + 1}"
    if not isinstance(entry, dict):
        raise _fail(source, where, "write it as a mapping with label, base, table and set")
    if unknown := sorted(set(entry) - _VARIANT_KEYS):
        raise _fail(source, where, f"unknown key {unknown[0]!r}; use {', '.join(sorted(_VARIANT_KEYS))}")
    for key in ("label", "base", "table"):
        if not isinstance(entry.get(key), str) or not entry[key].strip():
            raise _fail(source, where, f"give its {key} (a string)")
    label, base, table = (entry[k].strip() for k in ("label", "base", "table"))
    where = f"variant {label!r}"
    try:
        arch = parse_name(base)
    except UvlmError as e:
        raise _fail(source, where, str(e)) from None
    if table not in TABLES:
        raise _fail(source, where, f"table {table!r} is not one a variant can join; use one of {', '.join(TABLES)}")
    if not label.startswith(base + " ") or not label[len(base):].strip():
        raise _fail(source, where, f"its label must be its base's name, a space, then what sets it apart "
                                   f"(e.g. {base + ' lr 1e-3'!r}): the report reads its model from it")
    if "," in label:
        raise _fail(source, where, "a label holds no comma (--rows separates labels with commas)")
    control = entry.get("control", "none")
    if control not in CONTROLS:
        raise _fail(source, where, f"control {control!r}: use {' or '.join(CONTROLS)}")
    if control != "none" and (arch.tasks == "generation" or table == "fig7"):
        raise _fail(source, where, "a generation-only row has no step-matched understanding control"
                    if arch.tasks == "generation" else "Fig 7 probes rows, not step-matched controls")
    changes = entry.get("set", [])
    if not isinstance(changes, list) or not all(isinstance(c, str) for c in changes):
        raise _fail(source, where, "write set as a list of section.key=value strings")
    for change in changes:
        key = change.partition("=")[0].strip()
        if key == "model.name" or key.startswith("data.test"):
            raise _fail(source, where, f"{change!r}: a variant keeps its base's model (give another base) and "
                                       "its table's test set (its scores are paired with the other rows')")
    variant = Variant(label, base, table, tuple(changes), control)
    try:
        for job in variant.jobs(preset, 1, ()):  # every change applied and checked, as a run's would be
            job.resolved  # noqa: B018
    except UvlmError as e:
        raise _fail(source, where, str(e)) from None
    return variant


def _comparison(entry, source: str, i: int, rows: dict[str, set[str]]) -> Finding:
    """A comparison as a Finding; `rows` maps every row label it may name to the tables it is in."""
    where = f"comparison {i + 1}"
    if not isinstance(entry, dict):
        raise _fail(source, where, "write it as a mapping with better and than")
    if unknown := sorted(set(entry) - _COMPARISON_KEYS):
        raise _fail(source, where, f"unknown key {unknown[0]!r}; use {', '.join(sorted(_COMPARISON_KEYS))}")
    if "better" not in entry:
        raise _fail(source, where, "give better: the row (or rows) expected to score higher")
    for key in ("table", "column", "text"):
        if key in entry and not isinstance(entry[key], str):
            raise _fail(source, where, f"{key} is a string")
    better = _strings(entry["better"], source, f"{where}: better")
    than = _strings(entry["than"], source, f"{where}: than") if "than" in entry else ()
    for label in better + than:
        if label not in rows:
            raise _fail(source, where, f"{label!r} is no row of the paper's grid or of these variants")
    shared = set.intersection(*(rows[label] for label in better + than))
    table = entry.get("table")
    if table is None and len(shared) != 1:
        raise _fail(source, where, "its rows are in no one table" if not shared else
                    f"its rows are in several tables; give table: (one of {', '.join(sorted(shared))})")
    table = table or next(iter(shared))
    if table not in shared:
        raise _fail(source, where, f"table {table!r} does not hold all its rows")
    column = entry.get("column") or DEFAULT_COLUMN.get(table, "total_acc")
    allowed = [*columns(table), *(["gen"] if all(output_space(x) for x in better + than) else []),
               *(["probe"] if table == "fig7" else [])]
    if column not in allowed:
        raise _fail(source, where, f"column {column!r}: use one of {', '.join(allowed)} (gen: rows that draw "
                                   "images; probe: Fig 7's rows)")
    terms = mean_terms(list(better), list(than))
    if not terms:
        raise _fail(source, where, "its rows cancel out: nothing is left to compare")
    text = entry.get("text") or f"{' + '.join(better)} vs {' + '.join(than) or '0'} ({table} {column})"
    return Finding(text, table, column, terms)


def read_raw(path: Path) -> dict:
    """A variants file as written (a mapping), or one line saying what is wrong with it."""
    path = Path(path)
    text = read_text_file(path, "variants file", "a YAML file as docs/variants.md shows")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise UvlmError(f"variants file {path} is not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("variants") or [], list) \
            or not isinstance(raw.get("comparisons") or [], list):
        raise UvlmError(f"{path}: write a mapping with lists under variants: and comparisons: (see docs/variants.md)")
    if unknown := sorted(set(raw) - {"variants", "comparisons"}):
        raise UvlmError(f"{path}: unknown key {unknown[0]!r}; use variants and comparisons (see docs/variants.md)")
    return raw


def read_variants(path: Path, preset: str) -> Variants:
    """A variants file, checked in full before anything runs: each problem is one line naming it."""
    return parse_variants(read_raw(path), preset, str(path))


def parse_variants(raw: dict, preset: str, source: str) -> Variants:
    """`read_variants` on an already-loaded mapping."""
    rows = tuple(_variant(entry, source, i, preset) for i, entry in enumerate(raw.get("variants") or []))
    known: dict[str, set[str]] = {}
    alike: dict[str, str] = {}
    for j in expand("all", preset, 1):
        known.setdefault(j.label, set()).add(j.table)
        alike.setdefault(f"{j.table} {j.identity}", j.label)
    for v in rows:
        labels = [v.label, *([v.control_label] if v.control_label else [])]
        if clash := next((x for x in labels if x in known), None):
            raise _fail(source, f"variant {v.label!r}", f"a row labelled {clash!r} exists already; give it another")
        if (twin := alike.setdefault(v.identity(preset), v.label)) != v.label:
            raise _fail(source, f"variant {v.label!r}", f"its runs would be row {twin!r}'s (its changes change "
                                                        "nothing there); compare with that row instead")
        for label in labels:
            known[label] = {v.table}
    found = [_comparison(e, source, i, known) for i, e in enumerate(raw.get("comparisons") or [])]
    comparisons = tuple({c.text: c for c in found}.values())  # one finding per text: the last written
    return Variants(rows, comparisons, source, raw)


def folder_variants(results: Path, preset: str) -> Variants | None:
    """The variants a results folder's suites were run with (its record), or None."""
    path = Path(results) / FILE_NAME
    return read_variants(path, preset) if path.exists() else None


def merged_variants(results: Path, given: Path | None, preset: str) -> Variants | None:
    """The folder's variants (its record) and the given file's together, checked as one file:
    what a suite run, a status or a report in `results` covers. A label defined again with
    other runs is refused (its runs would be of two studies); a comparison of the same text is
    the given file's."""
    held_path = Path(results) / FILE_NAME
    if given is None:
        return folder_variants(results, preset)
    raw = read_raw(given)
    if not held_path.exists():
        return parse_variants(raw, preset, str(given))
    held = read_raw(held_path)
    source = f"{given} with {held_path}"
    mine = {v.label: v for v in (_variant(e, str(held_path), i, preset)
                                 for i, e in enumerate(held.get("variants") or []))}
    added = []
    for i, entry in enumerate(raw.get("variants") or []):
        v = _variant(entry, str(given), i, preset)
        if v.label not in mine:
            added.append(entry)
        elif (mine[v.label].identity(preset), mine[v.label].control) != (v.identity(preset), v.control):
            raise UvlmError(f"{held_path} defines variant {v.label!r} otherwise; give this one another label, "
                            "or another --out")
    texts = {e.get("text") for e in raw.get("comparisons") or [] if isinstance(e, dict) and e.get("text")}
    kept = [e for e in held.get("comparisons") or [] if not (isinstance(e, dict) and e.get("text") in texts)]
    merged = {"variants": [*(held.get("variants") or []), *added],
              "comparisons": [*kept, *(raw.get("comparisons") or [])]}
    return parse_variants(merged, preset, source)


def record_variants(results: Path, variants: Variants) -> None:
    """Keep a folder's variants in its record, for the next suite, its status and its report."""
    atomic_write_text(Path(results) / FILE_NAME, "# the variants of this folder's suites (`uvlm suite run "
                      "--variants`), read back by `uvlm suite` and `uvlm report`\n"
                      + yaml.safe_dump(variants.raw, sort_keys=False))
