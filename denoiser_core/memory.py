"""Allocator settings for the processes that denoise (the command line, the extension's worker).

A 1080p frame's network buffers are a few hundred MB each. glibc serves blocks that large with a fresh
``mmap`` and returns them to the system on ``free``, so every buffer is zero-filled again page by page by
the kernel: on a 2-core CPU the first 1080p run of `fast` in onnxruntime spent 4.0 s of 4.9 s in the
kernel (2.5 million page faults). Taking such blocks from the heap and not trimming it lets a run reuse
the pages its earlier buffers freed: 2.9 s for that run (2026-11-27, idle machine; the whole first 1080p
frame, 6.4 -> 4.5-5.0 s). A frame denoised in several windows (4K) hands the freed pages back after each
window (``release_freed_memory``), which keeps its peak at one window's buffers; a frame's freed buffers
go back before the next frame is read (``pipeline.denoise_file``) or the extension's worker replies. That
costs each frame its page faults again, for a bounded peak: kept from frame to frame, the freed blocks
were split by the next frame's reads, onnxruntime's next block did not fit and the heap grew (a six-frame
1080p sequence of `fast`: 7.9 and 11.4 GiB, 35.5 and 40.2 s, frames of up to 7.6 s; handed back: 3.5-3.8
GiB, 29.2-29.9 s, frames of 4.5-5.5 s; 2026-11-28, idle 2-core CPU).

Process-wide, so a library does not do this behind its caller's back: the command line and the extension's
worker call ``keep_freed_memory`` themselves. Elsewhere than glibc (macOS, Windows, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
NEVER_TRIM = 2**31 - 1  # the largest value mallopt takes (an int): free heap at the top is kept up to 2 GiB

_applied: bool | None = None
_libc: ctypes.CDLL | None = None  # glibc, once the settings are in force


def keep_freed_memory() -> bool:
    """Serve large blocks from the heap instead of ``mmap`` and keep freed heap memory mapped (glibc
    only). Returns whether the settings are in force; calling it again changes nothing."""
    global _applied, _libc
    if _applied is not None:
        return _applied
    _applied = False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 (glibc has it, musl does not: its mallopt is a stub)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, NEVER_TRIM) == 1
    _libc = libc if _applied else None
    return _applied


def release_freed_memory() -> None:
    """Give the heap's free pages back to the system (``malloc_trim``) where ``keep_freed_memory`` is in
    force. The inference core calls it after each window of a frame denoised in several windows (4K with
    `fast`), so that such a frame peaks at one window's buffers, not at the heap's high-water mark, and
    ``pipeline.denoise_file`` before each frame, so that a sequence peaks where one frame does."""
    if _libc is not None:
        _libc.malloc_trim(0)
