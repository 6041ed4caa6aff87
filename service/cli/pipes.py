"""A command's standard output closed early (`regtrain metrics ID | head`): end quietly, with
the status a process killed by SIGPIPE has (128 + 13), as Unix tools do; no traceback."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

CLOSED_PIPE_STATUS = 128 + signal.SIGPIPE


def quiet_when_piped(command: Callable[[], int]) -> int:
    try:
        code = command()
        sys.stdout.flush()  # inside the try: a small output meets the closed pipe only here
        return code
    except BrokenPipeError:
        # Python flushes stdout again at exit: point it at /dev/null so that flush is silent.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return CLOSED_PIPE_STATUS
