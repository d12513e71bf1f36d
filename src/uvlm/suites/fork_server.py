"""The first module a suite's fork server imports (uvlm.suites.children.PRELOAD): from then on
the server dies with the thread that started it, even while it is still importing the rest, so
a killed suite leaves no server behind."""

from uvlm.io import die_with_parent

die_with_parent()
