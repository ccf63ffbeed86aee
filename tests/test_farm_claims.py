"""Claims (denoiser_core.claims) on real files, held by real processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from cli_helpers import REPO

from denoiser_core import claims
from denoiser_core.claims import claim, marker_for


def _holder(output) -> subprocess.Popen:
    """Another process that claims ``output`` and keeps it until killed."""
    script = (f"import sys, time; from denoiser_core.claims import claim; held = claim({str(output)!r}); "
              "print('held' if held else 'busy', flush=True); time.sleep(600)")
    process = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True,
                               env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_claim_is_a_hidden_marker_with_pid_and_host_removed_on_release(tmp_path):
    output = tmp_path / "shot" / "frame_0001.exr"
    with claim(output) as held:
        marker = marker_for(output)
        assert marker == tmp_path / "shot" / ".frame_0001.exr.kprcan-claim" and held.marker == marker
        pid, host, _token = marker.read_text().split()
        assert (int(pid), host) == (os.getpid(), socket.gethostname())
        assert claim(output) is None  # a live worker (this one) holds it
        assert not held.took_over
    assert not marker.exists() and not output.exists()
    again = claim(output)  # free again
    assert again is not None
    again.release()


def test_a_claim_of_a_live_process_is_respected_and_of_a_dead_one_taken_over(tmp_path):
    output = tmp_path / "frame.exr"
    holder = _holder(output)
    try:
        assert claim(output) is None and claim(output) is None
    finally:
        holder.send_signal(signal.SIGKILL)  # no cleanup at all: the marker stays behind
        holder.wait()
    assert marker_for(output).read_text().split()[0] == str(holder.pid)
    with claim(output) as held:
        assert held.took_over and marker_for(output).read_text().split()[0] == str(os.getpid())
    assert not list(tmp_path.iterdir())


def test_a_claim_from_another_host_is_stale_once_its_heartbeat_stops(tmp_path):
    output = tmp_path / "frame.exr"
    marker = marker_for(output)
    marker.write_text("4242 render-node-17 0123456789abcdef\n")
    assert claim(output, stale_after=0.3) is None  # first seen: it may well be alive
    time.sleep(0.1)
    os.utime(marker)  # its worker's heartbeat: still alive
    time.sleep(0.25)
    assert claim(output, stale_after=0.3) is None
    time.sleep(0.4)  # no heartbeat since: the worker is gone
    with claim(output, stale_after=0.3) as held:
        assert held.took_over and str(os.getpid()) in marker.read_text()
    assert not marker.exists()


def test_a_held_claim_beats_while_its_owner_works(tmp_path, monkeypatch):
    monkeypatch.setattr(claims, "HEARTBEAT_SECONDS", 0.05)
    output = tmp_path / "frame.exr"
    with claim(output):
        marker = marker_for(output)
        os.utime(marker, ns=(0, 0))
        deadline = time.monotonic() + 10
        while marker.stat().st_mtime_ns == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert marker.stat().st_mtime_ns > 0
