"""Claims: which worker is working on which output, so several workers can share one sequence.

A claim is a small hidden marker file beside the output (``.NAME.kprcan-claim``), created with
``O_EXCL`` (atomic, also on NFS) and holding the owner's pid, host name and a random token. While it is
held a thread touches it every ``HEARTBEAT_SECONDS``. Another worker treats a claim as live, and leaves
the output alone, unless it is stale: its owner is a process on this host that no longer runs, or its
heartbeat has not moved for ``stale_after`` seconds as this process sees it (a worker on another host that
died, or one that is frozen; no clocks are compared). A stale claim is taken over. Releasing removes the
marker.

The unit claimed is any output path: a frame (``kprcan denoise``) or whatever a caller writes as one.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from pathlib import Path

from .errors import DenoiserError

log = logging.getLogger("kprcan")

SUFFIX = ".kprcan-claim"
HEARTBEAT_SECONDS = 30.0
POLL_SECONDS = 2.0  # how often a worker looks again at work another worker holds
STALE_SECONDS = 300.0  # ten missed heartbeats: the owner is gone (or frozen: its work is redone)
_HOST = socket.gethostname()
# marker -> (content, mtime, when first seen so) of claims other workers hold, to tell a stopped heartbeat
_SEEN: dict[Path, tuple[bytes, int, float]] = {}


def marker_for(output: Path) -> Path:
    return output.parent / f".{output.name}{SUFFIX}"


class Claim:
    """A held claim; a context manager that releases it on exit."""

    def __init__(self, marker: Path, content: bytes, took_over: bool):
        self.marker, self._content = marker, content
        self.took_over = took_over  # the previous owner is gone: whatever it was doing is unfinished
        self._stop = threading.Event()
        self._heartbeat = threading.Thread(target=self._beat, name=f"claim {marker.name}", daemon=True)
        self._heartbeat.start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                os.utime(self.marker)
            except OSError:  # taken over after all (we looked stale), or the folder went away
                return

    def release(self) -> None:
        self._stop.set()
        try:
            if self.marker.read_bytes() == self._content:  # still ours
                self.marker.unlink()
        except OSError:
            pass

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def claim(output: str | os.PathLike, stale_after: float = STALE_SECONDS) -> Claim | None:
    """Claim ``output`` for this process: a Claim (use it as a context manager), or None while another
    live worker holds it. A stale claim is taken over (see the module docstring)."""
    marker = marker_for(Path(output))
    content = f"{os.getpid()} {_HOST} {secrets.token_hex(8)}\n".encode()
    took_over = False
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DenoiserError(f"{marker.parent}: cannot write output there ({error.strerror})") from None
    for _attempt in range(5):  # each retry follows a claim that vanished or was taken over meanwhile
        try:
            descriptor = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            held = _read(marker)
            if held is None:
                continue  # released between our create and our read
            if not _is_stale(marker, held, stale_after):
                return None
            log.info("%s: taking over the claim of a worker that is gone (%s)", Path(output),
                     held.decode(errors="replace").strip() or "no owner written")
            _remove_stale(marker, held)
            took_over = True
            continue
        except OSError as error:
            raise DenoiserError(f"{marker.parent}: cannot write output there ({error.strerror})") from None
        try:
            with os.fdopen(descriptor, "wb") as stream:
                stream.write(content)
        except BaseException:  # a full disk, or a signal: leave no ownerless claim behind
            marker.unlink(missing_ok=True)
            raise
        _SEEN.pop(marker, None)
        return Claim(marker, content, took_over)
    return None


def _read(marker: Path) -> bytes | None:
    try:
        return marker.read_bytes()
    except FileNotFoundError:
        return None


def _is_stale(marker: Path, held: bytes, stale_after: float) -> bool:
    fields = held.decode(errors="replace").split()
    if len(fields) == 3 and fields[0].isdigit() and fields[1] == _HOST and not _running(int(fields[0])):
        return True
    # Another host, or an owner still writing its marker: stale once its heartbeat stops.
    try:
        mtime = marker.stat().st_mtime_ns
    except FileNotFoundError:
        return False  # released meanwhile: the next attempt creates ours
    now = time.monotonic()
    previous = _SEEN.get(marker)
    if previous is None or previous[:2] != (held, mtime):
        _SEEN[marker] = (held, mtime, now)
        return False
    return now - previous[2] > stale_after


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _remove_stale(marker: Path, held: bytes) -> None:
    """Remove ``marker`` if it still is the stale claim ``held``. Two workers may try at once: the marker is
    renamed away (only one rename succeeds) and put back if it turned out to be a fresh claim."""
    aside = marker.with_name(f"{marker.name}.stale-{os.getpid()}")
    try:
        os.rename(marker, aside)
    except FileNotFoundError:
        return
    try:
        if aside.read_bytes() != held:  # a live claim made after our read: give it back
            try:
                os.link(aside, marker)
            except FileExistsError:
                pass
    finally:
        aside.unlink(missing_ok=True)
    _SEEN.pop(marker, None)
