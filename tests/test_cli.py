"""The command line: every command has --help; bad input gives one line and exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer

from uvlm.cli import app


def all_commands(group: typer.Typer, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix]
    for info in group.registered_commands:
        found.append((*prefix, info.name or info.callback.__name__))
    for sub in group.registered_groups:
        found += all_commands(sub.typer_instance, (*prefix, sub.name))
    return found


@pytest.mark.parametrize("command", all_commands(app), ids=lambda c: " ".join(c) or "uvlm")
def test_every_command_has_help(cli, command):
    code, out, _ = cli(*command, "--help")
    assert code == 0 and "Usage" in out


def test_smartwatch_gallery_export_roundtrip(cli, tmp_path):
    out = tmp_path / "ds"
    code, stdout, err = cli("data", "smartwatch", "--out", out, "--images", 40, "--seed", 3,
                            "--size", 64, "--workers", 2)
    assert code == 0, err
    assert "40 images, 40 VQA, 40 caption, 40 generation" in stdout
    assert cli("data", "gallery", out, "--out", tmp_path / "g.png", "--n", 8)[0] == 0
    assert (tmp_path / "g.png").stat().st_size > 1000
    assert cli("data", "export-llava", out, tmp_path / "l.json")[0] == 0
    assert len(json.loads((tmp_path / "l.json").read_text())) == 120


def test_test_split_defaults_to_the_papers_counts(cli, tmp_path):
    code, stdout, _ = cli("data", "smartwatch", "--out", tmp_path / "t", "--seed", 1, "--size", 64,
                          "--split", "test", "--images", 30)
    assert code == 0 and "30 images, 20 VQA, 0 caption, 10 generation" in stdout


def test_separate_record_counts(cli, tmp_path):
    code, stdout, _ = cli("data", "smartwatch", "--out", tmp_path / "s", "--size", 64,
                          "--vqa", 30, "--captions", 0, "--generations", 10)
    assert code == 0 and "30 images, 30 VQA, 0 caption, 10 generation" in stdout


@pytest.mark.parametrize("args, message", [
    (["--images", "0"], "must be positive"),
    (["--images", "-5"], "must be positive"),
    (["--images", "5", "--vqa", "-1"], "negative"),
    (["--images", "5", "--bias", "colour"], "unknown bias"),
    (["--images", "5", "--bias-vqa-prob", "1.2"], "outside [0, 1]"),
    (["--images", "5", "--size", "48"], "below 64"),
    (["--images", "5", "--split", "val"], "unknown split"),
    (["--images", "five"], "Invalid value for '--images'"),
    (["--images", "5", "--workers", "0"], "--workers 0"),
])
def test_bad_dataset_arguments(cli, tmp_path, args, message):
    out = tmp_path / "bad"
    code, _, err = cli("data", "smartwatch", "--out", out, *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in err
    assert not out.exists() or not any(out.rglob("*.json*")), "nothing half-written"


def test_output_folder_with_another_dataset(cli, tmp_path):
    out = tmp_path / "ds"
    assert cli("data", "smartwatch", "--out", out, "--images", 5, "--size", 64)[0] == 0
    before = (out / "records.jsonl").read_bytes()
    code, _, err = cli("data", "smartwatch", "--out", out, "--images", 5, "--size", 64, "--seed", 1)
    assert code == 2 and "holds a different dataset" in err
    assert (out / "records.jsonl").read_bytes() == before


def test_missing_dataset(cli, tmp_path):
    code, _, err = cli("data", "gallery", tmp_path / "nothing", "--out", tmp_path / "g.png")
    assert code == 2 and "no dataset" in err and not (tmp_path / "g.png").exists()


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def test_score_prints_the_tables_columns(cli, tmp_path):
    f = tmp_path / "answers.jsonl"
    write_jsonl(f, [
        {"attribute": "time", "ground_truth": "11:59:59", "answer": "00:00:00"},
        {"attribute": "weather", "ground_truth": "rainy", "answer": "rainy"},
        {"attribute": "battery_pos", "ground_truth": "top-left", "answer": "top-right"},
        {"attribute": "battery", "ground_truth": "40%", "answer": "50%"},
    ])
    code, out, _ = cli("score", f)
    result = json.loads(out)
    assert code == 0
    assert result["time_acc"] == pytest.approx(100 * (1 - (1 / 6 + 2 / 30) / 3))
    assert result["weather_acc"] == 100.0 and result["position_acc"] == 0.0
    assert result["battery_acc"] == pytest.approx(90.0)
    assert result["total_acc"] == pytest.approx((result["time_acc"] + 100 + 0 + 90) / 4)
    assert result["n"]["total"] == 4


@pytest.mark.parametrize("bad, message", [
    ("{not json", "line 2"),
    ('{"attribute": "colour", "ground_truth": "red", "answer": "red"}', "line 2: attribute 'colour'"),
    ('{"attribute": "time", "answer": "01:00:00"}', "line 2: needs a string 'ground_truth'"),
    ('{"attribute": "time", "ground_truth": "soon", "answer": "01:00:00"}', "not HH:MM:SS"),
    ("[1, 2]", "line 2: not an object"),
])
def test_score_bad_lines(cli, tmp_path, bad, message):
    f = tmp_path / "answers.jsonl"
    write_jsonl(f, [{"attribute": "weather", "ground_truth": "sunny", "answer": "sunny"}, bad])
    code, out, err = cli("score", f)
    assert code == 2 and out == "" and message in err and len(err.strip().splitlines()) == 1


def test_score_missing_file(cli, tmp_path):
    code, _, err = cli("score", tmp_path / "none.jsonl")
    assert code == 2 and "does not exist" in err


def test_plan_prints_a_plan_that_fits_the_paper_preset(cli):
    paper = Path(__file__).resolve().parents[1] / "configs" / "paper" / "VQ-VQ.yaml"
    code, out, err = cli("plan", paper, "--gpu-mem", "80")
    assert code == 0, err
    assert "6,738.4M" in out and "fits" in out and "DOES NOT FIT" not in out
    assert "27 accumulation steps" in out and "gradient checkpointing off, chosen by the plan" in out
    code, out, err = cli("plan", paper, "--gpu-mem", "80", "--set", "train.gradient_checkpointing=true")
    assert code == 0 and "3 accumulation steps" in out and "(gradient checkpointing)" in out
    code, out, err = cli("plan", paper, "--gpu-mem", "80", "--set",
                         "train.gradient_checkpointing=false", "--set", "train.micro_batch=131")
    assert code == 0 and "DOES NOT FIT" in out  # 131 records' activations without checkpointing
    code, _, err = cli("plan", paper, "--gpu-mem", "-1")
    assert code == 2 and "--gpu-mem" in err


def test_every_command_shows_an_example_that_its_own_parser_accepts():
    """`uvlm --help` and each subcommand's help end in an `Example:` line, and the example is a valid
    command line (parsed by the command itself, not run)."""
    import shlex

    import typer

    from uvlm.cli import app

    root = typer.main.get_command(app)

    def leaves(command, path):
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                yield from leaves(sub, [*path, name])
        else:
            yield path, command

    assert "Example: uvlm " in root.help
    found = list(leaves(root, []))
    assert len(found) > 20
    for path, command in found:
        help_text = command.help or ""
        # the example runs to the end of its paragraph (a long one wraps)
        examples = [" ".join(help_text.split("Example:", 1)[1].split("\n\n")[0].split())] if "Example:" in help_text \
            else []
        assert examples, f"uvlm {' '.join(path)} --help shows no example"
        words = shlex.split(examples[0])
        assert words[:1 + len(path)] == ["uvlm", *path], examples[0]
        try:  # parsed by the command itself, not run
            command.make_context(" ".join(words[:1 + len(path)]), words[1 + len(path):])
        except Exception as e:
            raise AssertionError(f"the example of uvlm {' '.join(path)} does not parse: {examples[0]} ({e})") from None
