"""Table 2's benchmarks through lmms-eval, run on local copies of the datasets.

For each task, uvlm writes a task file that includes lmms-eval's own (prompts, parsing, metrics
unchanged) and points it at the user's copy (`datasets.load_dataset(...).save_to_disk(ROOT/TASK)`),
then runs lmms-eval's command line with uvlm's model class (the `uvlm` plugin, uvlm.llava.lmms).
What is recorded beside the scores: lmms-eval's version, each task's version and sample count,
and whether a GPT judge scored it. MMBench and MM-Vet are scored by a GPT judge over the network:
they are skipped unless asked for (`--judge`), with the judge named in the record. lmms-eval's
GQA task joins its questions to a second dataset of images that it fetches from the hub as it
starts; uvlm's GQA task file joins them to a local copy instead (ROOT/gqa_images).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from uvlm.errors import UvlmError
from uvlm.io import atomic_write_json, die_with_parent

# Table 2's columns: the lmms-eval task, the metric reported, and its scale to the paper's units
COLUMNS = {
    "MME": ("mme", "mme_perception_score", 1.0),
    "MMBench_EN": ("mmbench_en_dev", "gpt_eval_score", 1.0),
    "POPE": ("pope", "pope_f1_score", 100.0),
    "VizWiz": ("vizwiz_vqa_val", "exact_match", 100.0),
    "MMVet": ("mmvet", "gpt_eval_score", 1.0),
    "GQA": ("gqa", "exact_match", 100.0),
    "MMStar": ("mmstar", "average", 100.0),
    "TextVQA": ("textvqa_val", "exact_match", 100.0),
}
TASKS = tuple(task for task, _, _ in COLUMNS.values())
JUDGED = {"mmbench_en_dev", "mmvet"}  # scored by a GPT model over the network
LOCAL = "_local"  # suffix of the task files uvlm writes
# tasks whose images are a second dataset: ROOT/<this> holds the `testdev_balanced_images` of GQA's dataset
IMAGE_COPIES = {"gqa": "gqa_images"}


def lmms_eval_version() -> str:
    """The installed lmms-eval's version; one line naming the install where it is missing."""
    try:
        return version("lmms-eval")
    except PackageNotFoundError:
        raise UvlmError("lmms-eval is not installed; `make` installs it beside uvlm (pip install --no-deps "
                        "lmms-eval==0.7.3 and the `llava` extra: its own dependencies would bring torchvision, "
                        "which breaks transformers' image code here)") from None


def parse_tasks(text: str, judge: bool) -> tuple[list[str], dict[str, str]]:
    """The tasks to run from a comma list, and those skipped with the reason."""
    tasks = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise UvlmError(f"unknown task {unknown[0] if unknown else text!r}; use some of {', '.join(TASKS)}")
    skipped = {t: "scored by a GPT judge over the network; pass --judge (and OPENAI_API_KEY) to run it"
               for t in tasks if t in JUDGED and not judge}
    return [t for t in tasks if t not in skipped], skipped


def write_task_files(tasks: list[str], data_root: Path, folder: Path) -> None:
    """One task file per task in `folder`: lmms-eval's own, reading ROOT/TASK from disk."""
    for task in tasks:
        for copy in (Path(data_root) / task, *([Path(data_root) / IMAGE_COPIES[task]] if task in IMAGE_COPIES else [])):
            if not (copy / "dataset_dict.json").exists() and not (copy / "dataset_info.json").exists():
                raise UvlmError(f"no local copy of {task}'s {'images' if copy.name != task else 'questions'} at "
                                f"{copy}; save it there with datasets' save_to_disk (see docs/table2-llava.md)")
    paths = {task: lmms_task_file(task) for task in tasks}
    for task in tasks:
        copy = Path(data_root) / task
        text = (f"include: {paths[task]}\ntask: {task}{LOCAL}\ndataset_path: {copy.resolve()}\n"
                "dataset_kwargs:\n  load_from_disk: true\n")
        if task in IMAGE_COPIES:  # lmms-eval resolves `!function module.name` beside the task file
            images = (Path(data_root) / IMAGE_COPIES[task]).resolve()
            check_image_copy(copy, images)
            (folder / f"uvlm_{task}.py").write_text(
                "from uvlm.llava.benchmarks import with_local_images\n\n\n"
                f"def process_docs(dataset):\n    return with_local_images(dataset, {str(images)!r})\n")
            text += f"process_docs: !function uvlm_{task}.process_docs\n"
        (folder / f"{task}{LOCAL}.yaml").write_text(text)


def _split(path: Path):
    """A dataset saved with save_to_disk: its testdev split (GQA's), or its only one."""
    import datasets

    table = datasets.load_from_disk(str(path))
    if isinstance(table, datasets.DatasetDict):
        table = table["testdev"] if "testdev" in table else table[next(iter(table))]
    return table


def check_image_copy(questions: Path, images: Path) -> None:
    """Refuse (one line) a copy of GQA's images that lacks an image its questions ask about."""
    try:
        missing = sorted(set(_split(questions)["imageId"]) - set(_split(images)["id"]))
    except (KeyError, ValueError, OSError) as e:
        raise UvlmError(f"cannot read GQA's local copies {questions} and {images} ({type(e).__name__}: {e}); save "
                        "testdev_balanced_instructions and testdev_balanced_images there with save_to_disk") from None
    if missing:
        raise UvlmError(f"{images} lacks {len(missing)} of the images GQA's questions ask about (e.g. "
                        f"{missing[0]}); save the whole testdev_balanced_images split there")


def lmms_task_file(task: str) -> Path:
    """lmms-eval's own task file of `task`: Table 2's are named after their task, so a look in its
    tasks folder finds them without indexing its 2,000 tasks (9 s); any other by its index."""
    import re
    from importlib.util import find_spec

    folder = Path(find_spec("lmms_eval").origin).parent / "tasks"
    for path in sorted(folder.rglob(f"{task}.yaml")):
        if re.search(rf"^task:\s*[\"']?{re.escape(task)}[\"']?\s*$", path.read_text(errors="replace"), re.M):
            return path
    from lmms_eval.tasks import TaskManager
    from loguru import logger

    logger.disable("lmms_eval")  # its task index reports every file it skips; ours is only the path
    return Path(TaskManager().task_index[task]["yaml_path"])


def with_local_images(dataset, images: str):
    """GQA's questions, each with its image from a local copy of the images dataset (save_to_disk
    of the `testdev_balanced_images` configuration), joined by image id as lmms-eval's own
    process_docs joins them to the hub's; in memory, so the copies may be read-only."""
    by_id = {row["id"]: row["image"] for row in _split(Path(images))}
    return dataset.map(lambda doc: {"image": by_id[doc["imageId"]].convert("RGB")}, keep_in_memory=True)


def run_benchmarks(run: Path, tasks: list[str], data_root: Path, out: Path, batch_size: int = 8,
                   limit: int | None = None, skipped: dict[str, str] | None = None) -> dict:
    """Score the run folder `run` (a stage-2 run) on `tasks` with lmms-eval's CLI; write and return
    the record (out/benchmarks.json; lmms-eval's own files beside it)."""
    from uvlm.train.checkpoint import verify_digests

    if not (Path(run) / "final.json").exists():
        raise UvlmError(f"{run} is not a finished run (no final.json); give a trained stage, e.g. RUN/stage2")
    verify_digests(Path(run) / "weights", "weights file", f"delete {run} and run its `uvlm llava train` command "
                   "again to retrain it")  # before lmms-eval starts
    lmms_version = lmms_eval_version()
    out = Path(out)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="uvlm-tasks-") as folder:
        write_task_files(tasks, data_root, Path(folder))
        out.mkdir(parents=True, exist_ok=True)  # after every check: a refused call leaves no folder
        command = [sys.executable, "-m", "lmms_eval", "--model", "uvlm", "--model_args",
                   f"pretrained={Path(run).resolve()}", "--tasks", ",".join(t + LOCAL for t in tasks),
                   "--include_path", folder, "--batch_size", str(batch_size), "--output_path", str(out / "lmms-eval"),
                   "--log_samples", *(["--limit", str(limit)] if limit else [])]
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
        done = subprocess.run(command, capture_output=True, text=True, env=env, preexec_fn=die_with_parent)
    # this call's results only: lmms-eval can print an error and still exit 0, leaving an earlier call's file newest
    results = sorted((p for p in (out / "lmms-eval").rglob("*_results.json") if p.stat().st_mtime >= started),
                     key=lambda p: p.stat().st_mtime)
    raw = json.loads(results[-1].read_text()) if results else {}
    missing = [t for t in tasks if t + LOCAL not in raw.get("results", {})]
    if done.returncode != 0 or missing:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise UvlmError(f"lmms-eval scored no {', '.join(missing) or 'task'} ({tail[0][:200]}); rerun its command to "
                        f"see all: {' '.join(command)}")
    scores = {}
    for column, (task, metric, scale) in COLUMNS.items():
        if task in tasks:
            value = raw["results"][task + LOCAL].get(f"{metric},none")
            scores[column] = {"task": task, "metric": metric, "value": None if value is None else value * scale,
                              "n": raw.get("n-samples", {}).get(task + LOCAL, {}).get("effective"),
                              "task_version": _task_version(raw, task + LOCAL),
                              "judge": "GPT (lmms-eval's default)" if task in JUDGED else None}
    record = {"run": str(Path(run).resolve()), "lmms_eval_version": lmms_version, "limit": limit,
              "scores": scores, "skipped": skipped or {}, "lmms_eval_results": str(results[-1])}
    record = merged(_earlier_record(out / "benchmarks.json"), record)
    atomic_write_json(out / "benchmarks.json", record)
    return record


def _earlier_record(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def merged(earlier: dict | None, record: dict) -> dict:
    """`record` with the scores of an earlier call on the same run, lmms-eval version and --limit
    kept where this call did not score their task: a later call adds tasks, it never drops them."""
    if not earlier or any(earlier.get(k) != record[k] for k in ("run", "lmms_eval_version", "limit")):
        return record
    scores = {**earlier.get("scores", {}), **record["scores"]}
    scored = {score["task"] for score in scores.values()}
    skipped = {t: why for t, why in {**earlier.get("skipped", {}), **record["skipped"]}.items() if t not in scored}
    return {**record, "scores": scores, "skipped": skipped}


def _task_version(raw: dict, task: str):
    """The version in a task's metadata, as lmms-eval's results file records its config."""
    metadata = raw.get("configs", {}).get(task, {}).get("metadata")
    if isinstance(metadata, list):
        metadata = next((m for m in metadata if isinstance(m, dict) and "version" in m), {})
    return (metadata or {}).get("version")
