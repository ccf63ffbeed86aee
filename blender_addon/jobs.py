"""Denoising work on a background thread, with progress and cancel (no bpy here).

Blender's UI must never wait for a network: a Job runs its work items on one worker thread (onnxruntime
and numpy release the GIL, so Blender stays responsive) while the main thread polls ``state()`` from a
timer. Items can be added while the job runs (animation frames arrive one by one); ``close()`` says no
more will come. Work never touches bpy: callers do bpy work before (saving the render) and after
(loading the result) on the main thread.

This module imports nothing from Blender or the add-on, so tests can drive it directly.
"""

from __future__ import annotations

import queue
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# work(item, progress, cancelled) -> result; progress(fraction in [0, 1]); cancelled() -> bool
Work = Callable[[Any, Callable[[float], None], Callable[[], bool]], Any]


@dataclass
class JobState:
    label: str
    done: int                  # items finished (ok or failed)
    total: int                 # items added so far
    fraction: float            # overall progress in [0, 1]
    running: bool
    cancelled: bool
    errors: list[str] = field(default_factory=list)
    results: list[Any] = field(default_factory=list)

    def text(self) -> str:
        if self.cancelled and self.running:
            return f"{self.label}: cancelling..."
        count = f" {min(self.done + 1, self.total)}/{self.total}" if self.total > 1 else ""
        return f"{self.label}{count}: {self.fraction * 100:.0f}%"


class Job:
    """Runs ``work`` on each added item, in order, on one daemon thread."""

    def __init__(self, label: str, work: Work, expected_errors: tuple[type[BaseException], ...] = ()):
        """``expected_errors``: exception types that are user-facing messages (reported without traceback)."""
        self.label = label
        self._work = work
        self._expected = expected_errors
        self._items: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._closed = threading.Event()
        self._ended = threading.Event()
        self._thread: threading.Thread | None = None
        self._total = 0
        self._done = 0
        self._current = 0.0
        self._errors: list[str] = []
        self._results: list[Any] = []

    # --- feeding -----------------------------------------------------------------------------------
    def add(self, item: Any) -> None:
        if self._closed.is_set():
            raise RuntimeError(f"{self.label}: job is closed")
        with self._lock:
            self._total += 1
        self._items.put(item)

    def close(self) -> None:
        """No more items will be added: the thread ends once the queue is empty."""
        self._closed.set()

    def cancel(self) -> None:
        """Stop after the current item's next cancel check; queued items are dropped."""
        self._cancel.set()
        self._closed.set()

    # --- running -----------------------------------------------------------------------------------
    def start(self) -> Job:
        self._thread = threading.Thread(target=self._run, name=f"kprcan: {self.label}", daemon=True)
        self._thread.start()
        return self

    def run_inline(self) -> Job:
        """Run the queued items on the calling thread (background Blender has no UI to keep alive)."""
        self.close()
        self._run()
        return self

    def wait(self, timeout: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def finished(self) -> bool:
        """All work done (or cancelled) and nothing more can come."""
        return self._ended.is_set()

    def state(self) -> JobState:
        with self._lock:
            total = max(self._total, 1)
            return JobState(self.label, self._done, self._total,
                            min(1.0, (self._done + self._current) / total), self.running,
                            self._cancel.is_set(), list(self._errors), list(self._results))

    def _progress(self, fraction: float) -> None:
        with self._lock:
            self._current = min(max(float(fraction), 0.0), 1.0)

    def _run(self) -> None:
        try:
            while not self._cancel.is_set():
                try:
                    item = self._items.get(timeout=0.1)
                except queue.Empty:
                    if self._closed.is_set():
                        break
                    continue
                self._run_item(item)
        finally:
            self._ended.set()

    def _run_item(self, item: Any) -> None:
        try:
            result = self._work(item, self._progress, self._cancel.is_set)
        except Exception as error:  # reported to the user through state().errors, never swallowed
            if not isinstance(error, self._expected):
                traceback.print_exception(error)
            with self._lock:
                self._errors.append(str(error) or type(error).__name__)
        else:
            with self._lock:
                self._results.append(result)
        with self._lock:
            self._done += 1
            self._current = 0.0
