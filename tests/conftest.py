"""Shared helpers: run the CLI in-process and capture its exit code and output."""

from __future__ import annotations

import pytest

from uvlm.cli import main


@pytest.fixture
def cli(capsys):
    """Call `uvlm ARGS...`; return (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exit_info:
            main([str(a) for a in args])
        out, err = capsys.readouterr()
        return exit_info.value.code, out, err

    return run
