"""Run the ``privdyn`` command line inside the test process.

A subprocess pays 2-3 s of imports per call; most CLI tests only need the exit code and the
output, which the entry point (:func:`privdyn.cli.main`) gives in-process just as well. The few
tests that need a real process (a kill, a fresh interpreter, the installed console script) keep
using ``subprocess``.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import traceback
from dataclasses import dataclass


@dataclass
class Done:
    """What a finished command left: like :class:`subprocess.CompletedProcess`."""

    returncode: int
    stdout: str
    stderr: str


@contextlib.contextmanager
def _environment(env: dict[str, str] | None):
    if env is None:
        yield
        return
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run_cli(*args: object, env: dict[str, str] | None = None) -> Done:
    """``privdyn ARGS`` in this process (with ``env`` as the whole environment when given).

    An exception that escapes the entry point is what a user would see as a traceback: it is
    written to ``stderr`` with exit code 1, so tests that assert no traceback stay meaningful.
    """
    from privdyn.cli import main

    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["privdyn", *map(str, args)]
    code = 0
    try:
        with _environment(env), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException:  # noqa: BLE001  (reported like the interpreter would)
                err.write(traceback.format_exc())
                code = 1
    finally:
        sys.argv = argv
    return Done(code, out.getvalue(), err.getvalue())
