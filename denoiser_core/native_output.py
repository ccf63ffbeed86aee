"""Capture what native libraries print straight to file descriptors 1 and 2.

OpenEXR's C++ core reports a corrupt file by printing to stdout/stderr and then handing back an empty
file object. The CLI promises one clean line per error, so reads and writes run inside
``captured_native_output()``; the captured text feeds the error message (and is otherwise dropped).
Redirecting descriptors is process-wide: output other threads print meanwhile is swallowed too.
"""

from __future__ import annotations

import ctypes
import os
import sys
import tempfile
import threading
from contextlib import contextmanager

_LOCK = threading.Lock()  # two threads swapping descriptors at once would restore the wrong ones


class CapturedOutput:
    def __init__(self) -> None:
        self.text = ""

    def last_line(self) -> str:
        """The most telling captured line: OpenEXR's own error code line if any, else the last one."""
        lines = [line.strip() for line in self.text.splitlines() if line.strip()]
        coded = [line for line in lines if "EXR_ERR_" in line]
        return (coded or lines or [""])[-1]


def _flush_c_stdio() -> None:
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError, TypeError):  # no C runtime handle on this platform
        pass


@contextmanager
def captured_native_output():
    with _LOCK, _redirected() as captured:
        yield captured


@contextmanager
def _redirected():
    captured = CapturedOutput()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, ValueError, OSError):
            pass
    try:
        saved = (os.dup(1), os.dup(2))
    except OSError:  # descriptors closed (e.g. a GUI process): nothing to capture
        yield captured
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            _flush_c_stdio()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            sink.seek(0)
            captured.text = sink.read().decode("utf-8", errors="replace")
