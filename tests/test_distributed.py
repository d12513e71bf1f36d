"""One run across processes (torchrun, gloo on the CPU) equals the same run on one process.

A 2-process run with the same global batch gives the same losses and weights, to float
rounding, as 1 process, at two micro-batch sizes, for a unified and an understanding-only
model; all processes killed with SIGKILL and resumed give the bits of an uninterrupted 2-process
run; a record count that leaves one process without records in the last step finishes; a
fresh folder and a cold cache work (the main process builds, the other waits).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from .helpers import toy_judge, uvlm

# one worker runs this module (pytest -n 2 --dist loadgroup): its tests share a 2-process run
pytestmark = pytest.mark.xdist_group("distributed")

ROOT = Path(__file__).resolve().parents[1]


def config(encoders: dict, name: str, n: int = 20, **train) -> dict:
    return {"model": {"name": name, "hidden_size": 48, "layers": 2, "heads": 2, "intermediate_size": 96},
            "data": {"train": {"n_vqa": n, "n_caption": n, "n_generation": n},
                     "test": {"split": "test", "seed": 1, "n_vqa": 8, "n_caption": 0, "n_generation": 4,
                              "share_images": False}, **encoders},
            "train": {"batch_size": 8, "global_batch": 8, "epochs": 1, "checkpoint_every": 2, "eval_points": 0,
                      **train}}


def launch(cfg: dict, out: Path, env: dict, processes: int, *extra: str) -> list[str]:
    path = out.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(cfg))
    uvlm = ["-m", "uvlm.cli", "train", "--config", str(path), "--out", str(out), *extra]
    if processes == 1:
        return [sys.executable, *uvlm]
    # --standalone: a rendezvous on a free local port, so tests side by side never collide
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes), *uvlm]


def run(cfg: dict, out: Path, env: dict, processes: int, *extra: str) -> subprocess.CompletedProcess:
    command = launch(cfg, out, env, processes, *extra)
    if processes == 1:  # as a suite starts a run: from its fork server
        done = uvlm(command[3:], env)
    else:
        done = subprocess.run(command, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def train_lines(out: Path) -> list[dict]:
    return [x for x in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if x["event"] == "train"]


def weights(out: Path) -> dict[str, torch.Tensor]:
    return {f"{f}:{k}": v for f in ("adapters.safetensors", "llm/model.safetensors")
            for k, v in load_file(str(out / "weights" / f)).items()}


@pytest.fixture
def env(tmp_path):
    # a cache of its own per test: the 2-process runs start cold
    return {**os.environ, "UVLM_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT / "src"),
            "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def vq_vq_on_two(tmp_path_factory, encoders) -> Path:
    """VQ-VQ on 2 processes at micro-batches of 3, from a cold cache: the run both tests below
    compare with (one process; a killed and resumed 2-process run)."""
    root = tmp_path_factory.mktemp("vq-vq-on-two")
    env = {**os.environ, "UVLM_CACHE": str(root / "cache"), "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    run(config(encoders, "VQ-VQ", micro_batch=3), root / "run", env, 2)
    return root / "run"


@pytest.mark.parametrize("name", ["VQ-VQ", "VQ_u"])
def test_two_processes_equal_one_at_any_micro_batch(tmp_path, encoders, env, name, request):
    one = tmp_path / "one"
    run(config(encoders, name), one, env, 1)
    reference, ref_weights = train_lines(one), weights(one)
    for micro in (1, 3):
        two = tmp_path / f"two-micro{micro}"
        if name == "VQ-VQ" and micro == 3:
            two = request.getfixturevalue("vq_vq_on_two")
        else:
            run(config(encoders, name, micro_batch=micro), two, env, 2)
        lines = train_lines(two)
        assert len(lines) == len(reference)
        for a, b in zip(reference, lines, strict=True):
            assert a["lr"] == b["lr"]  # the schedule steps once per optimizer step
            for key in ("loss", "text_loss", "image_loss"):
                assert abs(a[key] - b[key]) <= 1e-4 * max(1.0, abs(a[key])), (micro, a["step"], key)
        got = weights(two)
        assert got.keys() == ref_weights.keys()
        worst = max(float((got[k] - ref_weights[k]).abs().max()) for k in got)
        assert worst < 1e-4, (micro, worst)
        assert json.loads((two / "final.json").read_text())["processes"] == 2


def kill_after_checkpoint(cfg: dict, out: Path, env: dict, step: int) -> None:
    """Start a 2-process run and SIGKILL the launcher and all its processes once checkpoint `step` is whole."""
    proc = subprocess.Popen(launch(cfg, out, env, 2), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (out / "checkpoints" / f"step-{step:07d}" / "state.json").exists():
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and every process it started
    proc.wait()
    assert not (out / "final.json").exists(), "the run ended before it could be killed"
    assert (out / "checkpoints" / f"step-{step:07d}" / "rng-1.pt").exists()  # every process's RNG is kept


def assert_same_bits(a: Path, b: Path) -> None:
    assert [(x["step"], x["loss"]) for x in train_lines(a)] == [(x["step"], x["loss"]) for x in train_lines(b)]
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_all_processes_killed_then_resumed_match_an_uninterrupted_run(tmp_path, encoders, env, vq_vq_on_two):
    cfg = config(encoders, "VQ-VQ", micro_batch=3)
    whole = vq_vq_on_two
    killed = tmp_path / "killed"
    kill_after_checkpoint(cfg, killed, env, 4)
    run(cfg, killed, env, 2, "--resume")
    assert_same_bits(whole, killed)


def test_a_sharded_run_equals_one_process_and_resumes_to_the_bit(tmp_path, encoders, env):
    """FSDP across 2 processes (a shared adapter, accumulation over micro-batches, a short last step
    that leaves one process without records, evaluation points on the gathered model mid-run and at
    the end) against the same run unsharded on 1; then killed and resumed."""
    toy_judge(Path(env["UVLM_CACHE"]))
    cfg = config(encoders, "VQ-VQ", n=19, micro_batch=3, eval_points=2, eval_samples=4)
    one = tmp_path / "one"
    run(cfg, one, env, 1)
    sharded = {**cfg, "train": {**cfg["train"], "sharding": "fsdp"}}
    whole = tmp_path / "whole"
    run(sharded, whole, env, 2)
    for a, b in zip(train_lines(one), train_lines(whole), strict=True):
        assert a["lr"] == b["lr"]
        for key in ("loss", "text_loss", "image_loss"):
            assert abs(a[key] - b[key]) <= 1e-4 * max(1.0, abs(a[key])), (a["step"], key)
    ref, got = weights(one), weights(whole)
    assert got.keys() == ref.keys()  # the same files as an unsharded run: eval and load need nothing new
    assert max(float((got[k] - ref[k]).abs().max()) for k in got) < 1e-4
    evals = [[x for x in map(json.loads, (o / "metrics.jsonl").read_text().splitlines()) if x["event"] == "eval"]
             for o in (one, whole)]
    assert len(evals[0]) == len(evals[1]) == 2 and "vqa_total_acc" in evals[1][0]
    assert all(abs(a["val_loss"] - b["val_loss"]) < 1e-4 for a, b in zip(*evals, strict=True))
    # the sharded path wrote the checkpoint: its optimizer state is keyed by parameter name
    last = sorted((whole / "checkpoints").glob("step-*"))[-1]
    state = torch.load(last / "state.pt", weights_only=False)
    assert all(isinstance(k, str) for k in state["optimizer"]["state"])
    killed = tmp_path / "killed"
    kill_after_checkpoint(sharded, killed, env, 4)
    run(sharded, killed, env, 2, "--resume")
    assert_same_bits(whole, killed)


def test_a_short_last_step_finishes(tmp_path, encoders, env):
    """19 records per task: 57 records, 7 steps of 8 and a last step of 1 record, which leaves the
    second process without any; it joins the step at weight 0."""
    out = tmp_path / "short"
    done = run(config(encoders, "VQ-VQ", n=19), out, env, 2)
    summary = json.loads((out / "final.json").read_text())
    assert summary["steps"] == 8 and summary["records"] == 57
    assert done.stdout.count("8 steps") == 1  # one line, from the main process


def test_full_fine_tuning_of_a_16_bit_llm_shards(tmp_path, encoders, env):
    """A pretrained-shaped LLM held in bf16 and trained whole (no LoRA) beside fp32 adapters: sharded,
    its trained weights are held in fp32 (FSDP wants one dtype per unit, AdamW wants fp32)."""
    cfg = config(encoders, "VQ-VQ", n=8, sharding="fsdp", precision="bf16")
    cfg["model"] = {"name": "VQ-VQ", "llm": "random:llama-tiny", "lora_r": 0}
    out = tmp_path / "full"
    run(cfg, out, env, 2)
    llm = load_file(str(out / "weights" / "llm" / "model.safetensors"))
    assert {v.dtype for v in llm.values()} == {torch.float32}
    assert json.loads((out / "final.json").read_text())["processes"] == 2


def test_a_launch_for_fsdp_needs_a_sharded_run_config(encoders):
    """`accelerate launch` with configs/accelerate/fsdp.yaml and a run config left unsharded is
    refused in one line, rather than trained unsharded (out of memory for a full 7B)."""
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from uvlm.errors import UvlmError
    from uvlm.train.config import from_dict
    from uvlm.train.loop import _sharded

    fsdp_launch = SimpleNamespace(distributed_type=DistributedType.FSDP, num_processes=8)
    with pytest.raises(UvlmError, match=r"--set train\.sharding=fsdp"):
        _sharded(from_dict(config(encoders, "VQ-VQ")), fsdp_launch, "bf16")
    sharded = from_dict(config(encoders, "VQ-VQ", sharding="fsdp"))
    assert _sharded(sharded, fsdp_launch, "bf16")
    assert not _sharded(sharded, SimpleNamespace(distributed_type=DistributedType.NO, num_processes=1), "fp32")


def test_suite_through_submitits_local_executor_matches_the_local_runner(tmp_path, encoders, monkeypatch):
    """The cluster path (submitit jobs, here submitit's local executor: real processes, no SLURM):
    two tiny runs, one interrupted mid-way as SLURM preemption would (USR2), requeued and resumed;
    the results equal the local runner's."""
    from uvlm.suites.cluster import ClusterSettings, submit_suite
    from uvlm.suites.runner import run_suite
    from uvlm.suites.spec import Job

    toy_judge(tmp_path / "cache")
    monkeypatch.setenv("UVLM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PYTHONPATH", str(ROOT / "src"))
    # long enough after its 4th step (about 130 more) that the preemption lands before the run ends, even on
    # a loaded machine: with 40 more it sometimes finished first and was never requeued
    jobs = [Job("A3", name, 0, config(encoders, name, n=24, epochs=15, checkpoint_every=2))
            for name in ("VQ-VQ", "VQ_u")]
    run_suite(jobs, tmp_path / "local", workers=1, echo=lambda s: None)
    cluster = tmp_path / "cluster"
    settings = ClusterSettings(executor="submitit-local", time_min=20, gpus_per_run=0, cpus_per_run=1)
    submitted = submit_suite(jobs, cluster, settings, echo=lambda s: None)
    victim = jobs[0].key
    marker = cluster / "runs" / victim / "checkpoints" / "step-0000004" / "state.json"
    deadline = time.time() + 300
    while time.time() < deadline and not marker.exists():
        time.sleep(0.05)
    # what SLURM sends a job it preempts: the preemption signal (USR2), to the job's process
    import psutil

    controller = psutil.Process(int(submitted[victim].job_id))
    for task in controller.children():
        task.send_signal(signal.SIGUSR2)
    for job in submitted.values():
        job.result()
    assert json.loads((cluster / "runs" / victim / "final.json").read_text())["resumed_from_step"] >= 4
    for job in jobs:
        local = json.loads((tmp_path / "local" / "runs" / job.key / "eval" / "metrics.json").read_text())
        remote = json.loads((cluster / "runs" / job.key / "eval" / "metrics.json").read_text())
        assert local == remote, job.key
    ledger = json.loads((cluster / "cluster.json").read_text())
    assert set(ledger) == {j.key for j in jobs}
    assert submit_suite(jobs, cluster, settings, echo=lambda s: None) == {}  # done runs are not resubmitted
