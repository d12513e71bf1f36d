"""The first module a suite's fork server imports (uvlm.suites.children.PRELOAD): from then on
the server dies with the thread that started it, even while it is still importing the rest, so
a killed suite leaves no server behind; and it leaves the terminal's process group, so a Ctrl-C
reaches the suite alone (which passes it on to each run once), not the server or a child it is
still forking."""

import importlib.util
import os
import sys

from uvlm.io import die_with_parent

die_with_parent()
if os.getppid() == 1:  # the suite died before that line: nothing would end this server
    os._exit(0)
os.setsid()
# A child of a suite started as `python -m uvlm.cli` would run uvlm.cli again as `__mp_main__`
# (multiprocessing's set-up for a parent run with -m), warning that it is already imported,
# unless the server's __main__ already names that module: as a fork of it, it does.
sys.modules["__main__"].__spec__ = importlib.util.find_spec("uvlm.cli")
