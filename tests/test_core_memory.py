"""denoiser_core.memory: the allocator setting of denoising processes, checked in real processes by what
happens to a large buffer's memory when it is freed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = """
import json, sys
import numpy as np
if sys.argv[1] == "keep":
    from denoiser_core.memory import keep_freed_memory
    assert keep_freed_memory()
def rss_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
base = rss_mib()
buffer = np.ones(64 * 2**20, np.float32)  # 256 MiB, as a 1080p frame's network buffers
held = rss_mib() - base
del buffer
print(json.dumps({"held": held, "after_free": rss_mib() - base}))
"""


def resident(mode: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_denoising_processes_keep_freed_buffers_mapped_for_the_next_frame():
    default, kept = resident("default"), resident("keep")
    assert default["held"] > 250 and kept["held"] > 250
    # by default a large buffer goes back to the system when freed, so the next one is faulted in again
    assert default["after_free"] < 20, default
    # kept: its pages stay mapped, ready for the next buffer
    assert kept["after_free"] > 250, kept


def test_keeping_freed_memory_is_applied_once_and_reports_its_state():
    from denoiser_core.memory import keep_freed_memory

    first = keep_freed_memory()
    assert keep_freed_memory() is first
    assert first == sys.platform.startswith("linux")
