"""Fault injection for the tests: ``PRIVDYN_FAULT=POINT`` makes the process kill itself
(SIGKILL, as a crash or an out-of-memory kill would) when it reaches POINT, so that a test can
stop a run at an exact place instead of after a guessed sleep. Points are ``wrote:NAME`` (a file
NAME was just written atomically) and ``recorded:KEY`` (artifact KEY was just recorded in the
manifest). Unset, this costs one environment lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "PRIVDYN_FAULT"


def reached(point: str) -> None:
    """Kill this process now when ``PRIVDYN_FAULT`` names ``point``."""
    if os.environ.get(ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)
