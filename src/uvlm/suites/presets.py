"""The presets and the configs of every row of tables A3, A5 and A6.

- cpu: a tiny Llama-architecture LLM trained from scratch (no pretrained LLM can be
  downloaded here), the stand-in encoders (`cpu-siglip`, `cpu-vq`), 64 px renders, data
  scaled so that one default-mix run trains in about 15 minutes on one core. The committed
  results were made with it; its VQ erases the clock hands (docs/cpu-preset.md).
- cpu2: the cpu instrument chosen to see the paper's effects (docs/cpu-preset.md): hands drawn
  three times thicker and a detail-weighted VQ, so both stand-ins keep the time; a tiny LLM
  two layers deep and 256 wide; 18K generation records instead of 12K.
- paper: Vicuna-7B-v1.5 + LoRA (r 128, alpha 256), SigLIP-base-patch16-224 and LlamaGen's
  VQ-16, 224 px renders, 60K + 60K + 60K records, the authors' learning rates and batch.
- smol: the paper preset with SmolLM2-135M-Instruct (a pretrained LLM that `make` installs) in
  place of Vicuna, LoRA r 64 / alpha 128 on its 576-wide layers: the whole study on one GPU.
- smol-standin: smol with cpu2's stand-in encoders at their own 64 px, for a GPU that has not
  the paper's encoder weights (`uvlm suite run --preset smol` names it when they are missing).
- cpu2-smol: cpu2 with smol's LLM (SmolLM2-135M + LoRA) and a quarter of its records: a CPU
  pilot of whether a pretrained LLM changes what cpu2 shows (docs/cpu-preset.md).

`write_configs(root)` writes configs/PRESET/[bias/]NAME.yaml for every preset; the committed files are
checked against it by the tests, so they never drift from this module.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import yaml

from uvlm.data.smartwatch import CPU_STYLE, RenderStyle
from uvlm.errors import UvlmError
from uvlm.io import atomic_write_text

A3_ROWS = ("SigLIP_u", "SigLIP-VQ", "SigLIP-SigLIP", "VQ_u", "VQ_g", "VQ-SigLIP", "VQ-VQ",
           "SigLIP*_u", "SigLIP*-SigLIP", "VQ*_u", "VQ*-VQ")
BIASED_ROWS = ("SigLIP_u", "SigLIP-SigLIP", "SigLIP-SigLIP-D", "SigLIP-VQ", "VQ_u", "VQ-VQ", "VQ-VQ-D",
               "VQ-SigLIP")
TABLES = {"default": A3_ROWS, "weather-biased": BIASED_ROWS, "battery-biased": BIASED_ROWS}
BIAS_VQA_PROB = 0.05  # in the biased sets, the chance that a VQA record asks the biased attribute
BIAS = {"default": None, "weather-biased": "weather", "battery-biased": "battery"}

PAPER_STYLE = {"size": 224, "detail_scale": 1.0, "face_radius": 0.4}
# cpu2's renders: the cpu style with hands three times the paper's relative width, which the
# VQ keeps at 8 x 8 pixels a code (docs/cpu-preset.md, target 1).
CPU2_STYLE = {**CPU_STYLE, "hand_scale": 3.0}


def stand_in(name: str, **changes) -> str:
    """The spec of a stand-in encoder with pretraining fields changed (uvlm.vision.load)."""
    return f"{name}:{yaml.safe_dump(changes, default_flow_style=True, width=1000).strip()}"


# The vicuna_v1 conversation's system prompt, which the authors' release trains with.
VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives "
                 "helpful, detailed, and polite answers to the user's questions.")


CPU_LLM = {"llm": "tiny", "hidden_size": 192, "layers": 3, "heads": 4, "intermediate_size": 512}


def _cpu_preset(style: dict, siglip: str, vq: str, llm: dict = CPU_LLM, n_generation: int = 12000) -> dict:
    """A cpu-scale preset: a tiny LLM, 12K VQA and 12K caption records and the cpu training, on
    `style`."""
    return {
        "model": dict(llm),
        "data": {
            "train": {"seed": 0, "n_vqa": 12000, "n_caption": 12000, "n_generation": n_generation, **style},
            "test": {"split": "test", "seed": 1, "n_vqa": 1000, "n_caption": 0, "n_generation": 500,
                     "share_images": False, **style},
            "siglip": siglip, "vq": vq},
        # batch 16 and lr 5e-4, measured on VQ_u and SigLIP_u (1,000 test questions): batch 8
        # learnt no more per sample; lr 2e-3 diverged early; 5e-4 beat 1e-3 (total 81.2 vs 80.7
        # for VQ_u, 80.2 vs 69.2 for SigLIP_u)
        "train": {"batch_size": 16, "lr": 5e-4, "adapter_lr": 5e-4, "threads": 1, "checkpoint_every": 200},
    }


PRESETS: dict[str, dict] = {
    "cpu": _cpu_preset(CPU_STYLE, "cpu-siglip", "cpu-vq"),
    # cpu2 (docs/cpu-preset.md): pictures and stand-ins that keep the time; a wider, shallower LLM
    # (12% slower per record) that learned more generation per record on VQ_g; 18K generation
    # records, the most that mutual + transfer-weather at 3 seeds afford in 16 h on 2 cores at
    # its speed (targets 2 and 5)
    "cpu2": _cpu_preset(CPU2_STYLE, stand_in("cpu-siglip", style=CPU2_STYLE),
                        stand_in("cpu-vq", detail_weight=4, style=CPU2_STYLE),
                        llm={**CPU_LLM, "hidden_size": 256, "layers": 2, "intermediate_size": 704},
                        n_generation=18000),
    "paper": {
        "model": {"llm": "lmsys/vicuna-7b-v1.5", "lora_r": 128, "lora_alpha": 256, "lora_dropout": 0.05,
                  "system_prompt": VICUNA_SYSTEM},
        "data": {
            "train": {"seed": 0, "n_vqa": 60000, "n_caption": 60000, "n_generation": 60000, **PAPER_STYLE},
            "test": {"split": "test", "seed": 1, "n_vqa": 1000, "n_caption": 0, "n_generation": 500,
                     "share_images": False, **PAPER_STYLE},
            "siglip": "siglip:google/siglip-base-patch16-224", "vq": "vq:checkpoints/vq_ds16_c2i.pt",
            "feature_dtype": "float16"},
        # the authors' 131 per GPU x 3 GPUs; on any device count, micro-batches of what fits, accumulated
        "train": {"batch_size": 131, "global_batch": 393, "micro_batch": "auto", "gradient_checkpointing": "auto",
                  "lr": 2e-4, "adapter_lr": 1e-4, "precision": "auto", "checkpoint_every": 50,
                  "device": "cuda"},  # a 7B model: refuse to fall back to the CPU
    },
}


# The paper preset with a pretrained LLM of 135M parameters (uvlm.train.packaged): the same data,
# encoders, batch and learning rates, so that a suite's rows differ from the paper preset's in
# the LLM alone. LoRA r 64 with the paper's alpha = 2r (19.5M parameters, 14% of the LLM; the
# paper's r 128 is 4.7% of Vicuna); `auto` checkpointing leaves it off on an 80 GB GPU.
PRESETS["smol"] = copy.deepcopy(PRESETS["paper"])
PRESETS["smol"]["model"].update({"llm": "smollm2-135m", "lora_r": 64, "lora_alpha": 128})
# train.device stays cuda: on a CPU its 180K-record runs take weeks, so a torch that sees no GPU is
# refused in one line rather than trained on
# ... and with cpu2's stand-ins and renders, where the paper's encoder weights are not at hand
PRESETS["smol-standin"] = copy.deepcopy(PRESETS["smol"])
PRESETS["smol-standin"]["data"] = {
    **{role: {**{k: v for k, v in PRESETS["smol"]["data"][role].items() if k not in PAPER_STYLE}, **CPU2_STYLE}
       for role in ("train", "test")},
    "siglip": PRESETS["cpu2"]["data"]["siglip"], "vq": PRESETS["cpu2"]["data"]["vq"], "feature_dtype": "float16"}
# cpu2 with SmolLM2-135M + LoRA (r 64, as smol) in place of its tiny LLM trained from scratch: the
# pilot of whether a pretrained LLM changes what cpu2 shows (docs/cpu-preset.md). Renders,
# stand-ins, prompt layout without a system prompt, test set and batch 16 are cpu2's. It trains
# under bf16 autocast, as smol and the paper do (on a CPU without bf16 instructions set
# train.precision: fp32). Its records are a quarter of cpu2's: at an eighth, where the pilot
# began (its learning-rate runs, runs-cpu2-smol-lr/sweep.sh, pass those sizes), VQ_u stayed at
# chance. One run at a time on both threads (a suite's default workers then is 1): each run ends
# within a 3-hour session.
PRESETS["cpu2-smol"] = copy.deepcopy(PRESETS["cpu2"])
PRESETS["cpu2-smol"]["model"] = {"llm": "smollm2-135m", "lora_r": 64, "lora_alpha": 128, "lora_dropout": 0.05}
PRESETS["cpu2-smol"]["data"]["train"].update({"n_vqa": 3000, "n_caption": 3000, "n_generation": 4500})
PRESETS["cpu2-smol"]["train"].update({"checkpoint_every": 25,  # 3 to 5 minutes of a run
                                      "precision": "bf16", "threads": 2})
# where a preset's real encoders are missing, the preset that runs the same study on stand-ins
STAND_IN_PRESET = {"smol": "smol-standin"}


# One-core seconds per training record (train + evaluation: wall time x the threads a run trained
# on): the median over each preset's committed runs (results-cpu2/, results/, results-cpu2-smol/;
# tests/test_suites.py checks these against them). What `uvlm suite list` and `suite status`
# estimate a suite's time from before any of its runs has finished on this machine.
MEASURED_SECONDS_PER_RECORD = {"cpu2": 0.0277, "cpu": 0.0207, "cpu2-smol": 1.04}


def row_config(preset: str, name: str, table: str = "default") -> dict:
    """The run config of one row of one table under one preset."""
    cfg = copy.deepcopy(PRESETS[preset])
    cfg["model"] = {"name": name, **cfg["model"]}
    if BIAS[table]:
        cfg["data"]["train"].update({"bias": BIAS[table], "bias_vqa_prob": BIAS_VQA_PROB})
    return cfg


def known_preset(preset: str) -> str:
    """`preset`, refused in one line unless it is one of PRESETS."""
    if preset not in PRESETS:
        raise UvlmError(f"unknown preset {preset!r}; use one of {', '.join(PRESETS)}")
    return preset


def asks_for_gpu(preset: str) -> bool:
    """Whether a preset's runs refuse to train without a GPU (`train.device: cuda`)."""
    return PRESETS[preset]["train"].get("device") == "cuda"


def preset_style(preset: str) -> dict:
    """The render style of a preset's SmartWatch test set, as RenderStyle.to_dict gives it."""
    return RenderStyle.of(PRESETS[preset]["data"]["test"]).to_dict()


def stand_in_configs(preset: str, kinds: tuple[str, ...] = ("vq", "siglip", "judge")) -> dict:
    """The pretraining configs of what a preset's SmartWatch runs load besides the LLM: its VQ and
    SigLIP stand-ins and the pixel judge of its test renders, under the cache keys the runs use
    (`uvlm pretrain --preset`, `make demo`). A preset that loads a real encoder has no stand-in
    of that kind to pretrain."""
    from uvlm.vision.judge import JudgeConfig  # here: suite commands that never pretrain skip the model code
    from uvlm.vision.pretrain import stand_in_config

    data = PRESETS[known_preset(preset)]["data"]
    configs = {}
    for kind in kinds:
        if kind == "judge":
            configs[kind] = JudgeConfig(style=preset_style(preset))
        elif data[kind].startswith("cpu-"):
            configs[kind] = stand_in_config(data[kind])
        else:
            instead = STAND_IN_PRESET.get(preset)
            raise UvlmError(f"the {preset} preset loads a real {kind} encoder ({data[kind]}), not a stand-in "
                            "to pretrain; " + (f"its study on stand-ins is --preset {instead}" if instead else
                                               "use a preset with stand-ins: cpu, cpu2, cpu2-smol or smol-standin"))
    return configs


def pretrained_stand_in(kind: str, cfg, progress=None, rebuild: bool = False) -> tuple:
    """The cached stand-in or judge of `kind` (vq, siglip, judge) for its pretraining config `cfg`,
    trained on first use, and its recorded quality."""
    from uvlm.vision import judge, pretrain

    build = {"vq": pretrain.pretrained_vq, "siglip": pretrain.pretrained_siglip, "judge": judge.pretrained_judge}[kind]
    return build(cfg, progress, rebuild=rebuild)


# One-core seconds each stand-in and judge takes to pretrain on this 2-core machine (train_seconds
# in the meta.json of the cache entries behind the committed runs, and benchmarks/RESULTS.md's
# bench_encoders for the cpu preset's encoders). The cpu judge was never timed on its own: it has
# cpu2's steps, pool and image size, so it is given cpu2's time.
MEASURED_PRETRAIN_SECONDS = {"cpu": {"vq": 1195, "siglip": 687, "judge": 678},
                             "cpu2": {"vq": 1265, "siglip": 1028, "judge": 678}}
MEASURED_PRETRAIN_SECONDS["cpu2-smol"] = MEASURED_PRETRAIN_SECONDS["cpu2"]  # the same stand-ins and judge


def _cache_entry(kind: str, cfg) -> tuple[str, dict]:
    """The cache kind and key under which `pretrained_stand_in` keeps a stand-in or judge."""
    from dataclasses import asdict

    from uvlm.vision.pretrain import cache_key

    return ("judge", asdict(cfg)) if kind == "judge" else (f"pretrained-{kind}", cache_key(cfg))


def stand_ins_to_pretrain(configs: list[dict], preset: str) -> list[tuple[str, float | None]]:
    """What the runs of these configs load that this machine would pretrain first (neither
    cached nor shipped in the package): (what, measured seconds or None), the VQ first. A run
    builds them on first use; `uvlm pretrain KIND --preset P` builds one ahead."""
    from uvlm.model.names import parse_name
    from uvlm.vision.cache import is_cached
    from uvlm.vision.pretrain import stand_in_config

    needed: dict[str, object] = {}
    for cfg in configs:
        arch = parse_name(cfg["model"]["name"])
        if cfg["data"]["train"].get("domain", "smartwatch") != "smartwatch":
            continue  # CelebA's stand-ins and judge are built from the copy's faces: not priced here
        for kind in ("vq", "siglip"):
            spec = cfg["data"].get(kind, "")
            if kind in (arch.input_space, arch.output_space) and spec.startswith("cpu-"):
                needed.setdefault(f"{kind} stand-in", (kind, stand_in_config(spec)))
        if arch.output_space:  # generation is judged (every preset's judge is a model trained here)
            needed.setdefault("judge", ("judge", stand_in_configs(preset, ("judge",))["judge"]))
    seconds = MEASURED_PRETRAIN_SECONDS.get(preset, {})
    order = sorted(needed.items(), key=lambda item: item[0] != "vq stand-in")  # the longest first
    return [(what, seconds.get(kind)) for what, (kind, cfg) in order if not is_cached(*_cache_entry(kind, cfg))]


def pretraining_line(configs: list[dict], preset: str) -> str | None:
    """One sentence on what a suite pretrains before its first run, with the measured times; None
    when everything is cached."""
    todo = stand_ins_to_pretrain(configs, preset)
    if not todo:
        return None
    parts = [f"{what} (about {s / 60:.0f} min)" if s else f"{what} (time not measured)" for what, s in todo]
    commands = ", ".join(f"`uvlm pretrain {what.split(' ')[0]} --preset {preset}`" for what, _ in todo)
    return (f"first the runs pretrain what this machine has not cached, one core each: {', '.join(parts)}; "
            f"{commands} {'builds it' if len(todo) == 1 else 'build them'} ahead")


def _pretrain_one(kind: str, cfg) -> str:
    """Child-process body of `pretrain_stand_ins`: one stand-in or judge, its quality line."""
    from uvlm.progress import reporter
    from uvlm.vision.pretrain import quality_line

    _, info = pretrained_stand_in(kind, cfg, reporter(f"  pretraining {kind}"))
    return f"  {kind}: {quality_line(info)}"


def pretrain_stand_ins(configs: dict, workers: int, echo: Callable[[str], None] = print) -> None:
    """Pretrain (or reuse) the stand-ins and judges of `configs` ({kind: pretraining config},
    as `stand_in_configs` gives them), `workers` at a time in child processes, started in the given
    order (the VQ, the longest, first), echoing each one's quality line. Each trains on one thread
    (uvlm.device.PRETRAIN_THREADS), so two side by side use a 2-core machine better than one
    after the other. Lines come as each one finishes."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from uvlm.progress import quiet_libraries

    with ProcessPoolExecutor(max_workers=max(1, workers), mp_context=multiprocessing.get_context("spawn"),
                             initializer=quiet_libraries) as pool:
        for done in as_completed([pool.submit(_pretrain_one, kind, cfg) for kind, cfg in configs.items()]):
            echo(done.result())


# What a CelebA run takes from its preset's SmartWatch data: the record counts, seeds and test
# set layout; the image size stays the preset's (64 px on the cpu, the paper's 224).
_CELEBA_KEYS = ("seed", "split", "n_vqa", "n_caption", "n_generation", "share_images", "size")


def celeba_data(preset: str, celeba: str) -> dict:
    """data.train and data.test of a CelebA run under `preset`, read from the copy at `celeba`:
    the preset's counts and image size, CelebA's official train and test partitions (uvlm.data.faces
    decides the rest: uniform yes/no values, the face crop)."""
    data = PRESETS[preset]["data"]
    return {role: {"domain": "celeba", "celeba": str(celeba), "split": "train",
                   **{k: v for k, v in data[role].items() if k in _CELEBA_KEYS}}
            for role in ("train", "test")}


def config_path(root: Path, preset: str, name: str, table: str = "default") -> Path:
    folder = Path(root) / preset
    return (folder if table == "default" else folder / table) / f"{name}.yaml"


def write_configs(root: Path) -> list[Path]:
    """Write every row's config for every preset; return the paths."""
    written = []
    for preset in PRESETS:
        for table, rows in TABLES.items():
            for name in rows:
                path = config_path(root, preset, name, table)
                header = f"# {name}, {table} mix, {preset} preset. Generated by uvlm.suites.presets.\n"
                atomic_write_text(path, header + yaml.safe_dump(row_config(preset, name, table), sort_keys=False))
                written.append(path)
    return written
