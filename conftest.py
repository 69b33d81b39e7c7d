"""Every Python block of README.md and docs/*.md runs, in order, one namespace per file, as part of
the tests (Sybil).

A block that starts with ``>>>`` is a doctest: what it prints must match what the README
shows. ``<!-- skip: next -->`` before a block skips it: only for blocks that need hardware the
test machines lack (GPUs), whose code path the tests run in another way. The blocks run in a fresh temporary directory, so the files they write (a pool, a
study database) do not land in the checkout.
"""

from __future__ import annotations

import doctest
import os
import tempfile
from typing import Any

from sybil import Sybil
from sybil.parsers.markdown import PythonCodeBlockParser, SkipParser


def _enter_tmp(namespace: dict[str, Any]) -> None:
    namespace["_readme_cwd"] = os.getcwd()
    namespace["_readme_tmp"] = tmp = tempfile.TemporaryDirectory(prefix="nas-warmstart-readme-")
    os.chdir(tmp.name)


def _leave_tmp(namespace: dict[str, Any]) -> None:
    os.chdir(namespace["_readme_cwd"])
    namespace["_readme_tmp"].cleanup()


pytest_collect_file = Sybil(
    parsers=[PythonCodeBlockParser(doctest_optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE), SkipParser()],
    patterns=["README.md", "docs/*.md"],
    setup=_enter_tmp,
    teardown=_leave_tmp,
).pytest()
