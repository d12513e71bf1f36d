"""A researcher's own rows beside the paper's: a variants file read into jobs and comparisons.

    variants:
      - label: SigLIP-SigLIP gen-weight 0.2   # the row's name: its base's name, a space, anything
        base: SigLIP-SigLIP                   # the paper row (a model name) it starts from
        table: A3                             # the table it joins: its data mix, suite and report table
        set: [train.gen_loss_weight=0.2]      # config changes, on top of the preset and the folder's --set
        control: none                         # or step-matched (see `variant_jobs`)
    comparisons:
      - better: SigLIP-SigLIP gen-weight 0.2  # a row label, or a list of them (their mean)
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
from uvlm.suites.findings import Finding, _mean
from uvlm.suites.results import KEY_COLUMN, columns
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
                control = step_matched(_as_understanding_only(cfg))
                out.append(Job(self.table, self.control_label, seed, control, variant=self.label))
        return out


def _as_understanding_only(cfg: dict) -> dict:
    """A unified config as its `_u` model (same data and settings): step_matched then trains it for
    the unified model's steps. An understanding-only config as it is."""
    arch = parse_name(cfg["model"]["name"])
    if arch.tasks == "understanding":
        return cfg
    out = {**cfg, "model": {**cfg["model"], "name": cfg["model"]["name"].split("-")[0] + "_u"}}
    return out


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


def _variant(entry, source: str, i: int) -> Variant:
    where = f"variant {i + 1}"
    if not isinstance(entry, dict):
        raise _fail(source, where, "write it as a mapping with label, base, table and set")
    if unknown := sorted(set(entry) - _VARIANT_KEYS):
        raise _fail(source, where, f"unknown key {unknown[0]!r}; use {', '.join(sorted(_VARIANT_KEYS))}")
    for key in ("label", "base", "table"):
        if not isinstance(entry.get(key), str) or not entry[key].strip():
            raise _fail(source, where, f"give its {key}")
    label, base, table = (entry[k].strip() for k in ("label", "base", "table"))
    where = f"variant {label!r}"
    parse_name(base)  # an unknown model name: its own one-line error
    if table not in TABLES:
        raise _fail(source, where, f"table {table!r} is not one a variant can join; use one of {', '.join(TABLES)}")
    if not label.startswith(base + " ") or not label[len(base):].strip():
        raise _fail(source, where, f"its label must be its base's name, a space, then what sets it apart "
                                   f"(e.g. {base + ' lr 1e-3'!r}): the report reads its model from it")
    control = entry.get("control", "none")
    if control not in CONTROLS:
        raise _fail(source, where, f"control {control!r}: use {' or '.join(CONTROLS)}")
    if control != "none" and parse_name(base).tasks == "generation":
        raise _fail(source, where, "a generation-only row has no step-matched understanding control")
    changes = entry.get("set", [])
    changes = [changes] if isinstance(changes, str) else changes
    if not isinstance(changes, list) or not all(isinstance(c, str) for c in changes):
        raise _fail(source, where, "write set as a list of section.key=value strings")
    return Variant(label, base, table, tuple(changes), control)


def _comparison(entry, source: str, i: int, rows: dict[str, set[str]]) -> Finding:
    """A comparison as a Finding; `rows` maps every row label it may name to the tables it is in."""
    where = f"comparison {i + 1}"
    if not isinstance(entry, dict):
        raise _fail(source, where, "write it as a mapping with better and than")
    if unknown := sorted(set(entry) - _COMPARISON_KEYS):
        raise _fail(source, where, f"unknown key {unknown[0]!r}; use {', '.join(sorted(_COMPARISON_KEYS))}")
    if "better" not in entry:
        raise _fail(source, where, "give better: the row (or rows) expected to score higher")
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
    if column not in (*columns(table), "gen", "probe"):
        raise _fail(source, where, f"column {column!r}: use one of {', '.join([*columns(table), 'gen', 'probe'])}")
    text = entry.get("text") or f"{' + '.join(better)} vs {' + '.join(than) or '0'} ({table} {column})"
    return Finding(str(text), table, column, _mean(list(better), list(than)))


def read_variants(path: Path, preset: str) -> Variants:
    """A variants file, checked in full before anything runs: each problem is one line naming it."""
    path = Path(path)
    text = read_text_file(path, "variants file", "a YAML file as docs/variants.md shows")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise UvlmError(f"variants file {path} is not valid YAML ({str(e).splitlines()[0]})") from None
    return parse_variants(raw, preset, str(path))


def parse_variants(raw, preset: str, source: str) -> Variants:
    """`read_variants` on an already-loaded mapping."""
    if not isinstance(raw, dict) or not isinstance(raw.get("variants", []), list):
        raise UvlmError(f"{source}: write a mapping with a list under variants: (see docs/variants.md)")
    if unknown := sorted(set(raw) - {"variants", "comparisons"}):
        raise UvlmError(f"{source}: unknown key {unknown[0]!r}; use variants and comparisons (see docs/variants.md)")
    rows = tuple(_variant(entry, source, i) for i, entry in enumerate(raw.get("variants") or []))
    known: dict[str, set[str]] = {}
    for j in expand("all", preset, 1):
        known.setdefault(j.label, set()).add(j.table)
    for v in rows:
        if v.label in known:
            raise _fail(source, f"variant {v.label!r}", "a row of that label exists already; give it another")
        for job in v.jobs(preset, 1, ()):  # every change applied and checked, as a run's would be
            try:
                job.resolved  # noqa: B018
            except UvlmError as e:
                raise _fail(source, f"variant {v.label!r}", str(e)) from None
            known[job.label] = {v.table}
    if not isinstance(raw.get("comparisons", []), list):
        raise UvlmError(f"{source}: write comparisons: as a list (see docs/variants.md)")
    comparisons = tuple(_comparison(e, source, i, known) for i, e in enumerate(raw.get("comparisons") or []))
    return Variants(rows, comparisons, source, raw)


def folder_variants(results: Path, preset: str) -> Variants | None:
    """The variants a results folder's suites were run with (its record), or None."""
    path = Path(results) / FILE_NAME
    return read_variants(path, preset) if path.exists() else None


def merged_variants(results: Path, given: Variants | None, preset: str) -> Variants | None:
    """The folder's variants (its record) and the given file's together: what a suite run or a
    status in `results` covers. A label defined again with other settings is refused (its runs
    would be of two studies); a comparison of the same text is the given file's."""
    held = folder_variants(results, preset)
    if held is None or given is None:
        return given or held
    mine = {v.label: v for v in held.rows}
    for v in given.rows:
        if v.label in mine and mine[v.label] != v:
            raise UvlmError(f"{Path(results) / FILE_NAME} defines variant {v.label!r} otherwise; give this one "
                            "another label, or another --out")
    texts = {c.text for c in given.comparisons}
    kept = [entry for entry, c in zip(held.raw.get("comparisons") or [], held.comparisons, strict=True)
            if c.text not in texts]
    added = [e for e, v in zip(given.raw.get("variants") or [], given.rows, strict=True) if v.label not in mine]
    merged = {"variants": [*(held.raw.get("variants") or []), *added],
              "comparisons": [*kept, *(given.raw.get("comparisons") or [])]}
    return parse_variants(merged, preset, f"{given.source} with {Path(results) / FILE_NAME}")


def record_variants(results: Path, variants: Variants) -> None:
    """Keep a folder's variants in its record, for the next suite, its status and its report."""
    atomic_write_text(Path(results) / FILE_NAME, "# the variants of this folder's suites (`uvlm suite run "
                      "--variants`), read back by `uvlm suite` and `uvlm report`\n"
                      + yaml.safe_dump(variants.raw, sort_keys=False))
