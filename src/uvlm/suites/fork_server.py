"""The first module a suite's fork server imports (uvlm.suites.children.PRELOAD): from then on
the server dies with the thread that started it, even while it is still importing the rest, so
a killed suite leaves no server behind; and it leaves the terminal's process group, so a Ctrl-C
reaches the suite alone (which passes it on to each run once), not the server or a child it is
still forking."""

import os

from uvlm.io import die_with_parent

die_with_parent()
if os.getppid() == 1:  # the suite died before that line: nothing would end this server
    os._exit(0)
os.setsid()
