"""Shared fixtures: the CLI run in-process, and tiny encoders in the real formats."""

from __future__ import annotations

import pytest

from uvlm.cli import main

from .helpers import tiny_encoders


@pytest.fixture
def cli(capsys):
    """Call `uvlm ARGS...`; return (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exit_info:
            main([str(a) for a in args])
        out, err = capsys.readouterr()
        return exit_info.value.code, out, err

    return run


@pytest.fixture(scope="session")
def encoders(tmp_path_factory) -> dict[str, str]:
    """Encoder specs of a 16-token VQ and a 16-token SigLIP, built once per test session."""
    return tiny_encoders(tmp_path_factory.mktemp("enc"))
