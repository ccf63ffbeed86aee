"""Denoising in a separate Python process: ``denoiser_core`` never runs inside Blender's process.

Blender binaries that carry their own OpenEXR (Debian's 3.4.1, for one) crash in ``OpenEXR.File`` when
the pip OpenEXR module is loaded next to it: the two libraries' symbols collide (exit 139). So EXR
reading and writing, onnxruntime sessions and the device probe all run in a worker: Blender's own Python
(``sys.executable``) running this file with Blender's import path (the extension's wheels, the user's
PYTHONPATH). It loads each model once and keeps it; Blender's UI never waits for it; cancel asks it
to stop between tiles and kills it when it does not.

Protocol: one JSON object per line. Requests on stdin: ``{"op": "probe"}``, ``{"op": "load", ...}``,
``{"op": "denoise", ...}``, ``{"op": "shot", ...}`` (temporal mode), ``{"op": "beauty", ...}``,
``{"op": "cancel"}``. Replies on stdout: ``{"progress": f}`` lines, then ``{"ok": {...}}`` or
``{"error": text, "exit_code": n}``.

The client half (``Worker``) imports nothing from Blender either, so tests can drive it directly.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import sys
import sysconfig
import threading
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
COMPOSITOR_LAYER = "Composite"   # the compositor's output in a multilayer render: noisy, never denoised
CANCEL_GRACE_SECONDS = 5.0       # a worker that has not stopped by then is killed
DEVICE_LABELS = {"cpu": "CPU", "cuda": "CUDA", "tensorrt": "TensorRT", "directml": "DirectML",
                 "coreml": "CoreML"}


class WorkerError(Exception):
    """A problem the worker reported (``exit_code`` 2: the user's input) or its process failing (1)."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class Cancelled(WorkerError):
    def __init__(self):
        super().__init__("cancelled", 1)


# --- the client (Blender's process) -----------------------------------------------------------------

def import_path() -> list[str]:
    """Blender's sys.path without its standard library (the worker's interpreter brings its own) and its
    script folders, with the folder holding denoiser_core first (the extension's copy, or a checkout's
    top-level package)."""
    paths = sysconfig.get_paths()
    stdlib = {os.path.normcase(os.path.abspath(paths[key])) for key in ("stdlib", "platstdlib")}
    kept = []
    for entry in sys.path:
        if not entry or entry.endswith(".zip") or os.path.basename(entry) == "lib-dynload":
            continue
        if os.path.normcase(os.path.abspath(entry)) in stdlib or not os.path.isdir(entry):
            continue
        if any(os.path.isdir(os.path.join(entry, name)) for name in ("bpy", "bl_ui")):
            continue  # Blender's own script folders (or pip bpy's): nothing the worker needs
        kept.append(entry)
    core_home = HERE if (HERE / "denoiser_core").is_dir() else HERE.parent
    return list(dict.fromkeys([str(core_home), *kept]))


def device_text(ran: dict) -> str:
    """"on CPU", or "on CPU (cuda: libcublasLt.so.13: cannot open ...)" when an accelerator fell back."""
    label = DEVICE_LABELS.get(ran.get("device", ""), ran.get("device", "?"))
    return f"on {label}" + (f" ({ran['fallback']})" if ran.get("fallback") else "")


def python_executable() -> str:
    """Blender's Python interpreter (official builds ship one; pip bpy runs in one; Debian's uses the
    system's python3.x)."""
    return sys.executable


class Worker:
    """One worker process, started on first use and restarted after it dies or is killed."""

    def __init__(self, python: str | None = None):
        self._python = python or python_executable()
        self._process: subprocess.Popen | None = None
        self._replies: queue.Queue = queue.Queue()
        self._lock = threading.Lock()  # one request at a time

    def start(self) -> None:
        if self._process is not None and self._process.poll() is None:
            return
        environment = dict(os.environ, PYTHONPATH=os.pathsep.join(import_path()), PYTHONNOUSERSITE="1")
        environment.pop("PYTHONHOME", None)  # Blender may set it for its own embedded interpreter
        try:
            self._process = subprocess.Popen(
                [self._python, "-u", str(HERE / "worker.py")], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=None, env=environment, text=True, encoding="utf-8")
        except OSError as error:
            raise WorkerError(f"cannot start the denoiser process ({self._python}: {error})") from None
        self._replies = queue.Queue()
        threading.Thread(target=self._read, args=(self._process, self._replies), daemon=True,
                         name="kprcan: worker replies").start()

    @staticmethod
    def _read(process: subprocess.Popen, replies: queue.Queue) -> None:
        for line in process.stdout:
            try:
                replies.put(json.loads(line))
            except json.JSONDecodeError:  # not ours (a library printing): show it, keep going
                sys.stderr.write(line)
        replies.put(None)  # the process ended

    def request(self, op: str, progress: Callable[[float], None] | None = None,
                cancelled: Callable[[], bool] | None = None, **fields) -> dict:
        """Send one request and wait for its answer; raises WorkerError, or Cancelled after a cancel."""
        with self._lock:
            self.start()
            process, replies = self._process, self._replies
            self._send(process, {"op": op, **fields})
            cancel_sent_at = None
            while True:
                if cancelled is not None and cancelled() and cancel_sent_at is None:
                    self._send(process, {"op": "cancel"})
                    cancel_sent_at = _now()
                if cancel_sent_at is not None and _now() - cancel_sent_at > CANCEL_GRACE_SECONDS:
                    self.stop()
                    _remove_temp_files(_outputs(fields))
                    raise Cancelled()
                try:
                    reply = replies.get(timeout=0.1)
                except queue.Empty:
                    continue
                if reply is None:
                    code = process.wait()
                    self._process = None
                    if cancel_sent_at is not None:
                        raise Cancelled()
                    raise WorkerError(f"the denoiser process ended unexpectedly (exit status {code}; "
                                      "its output is in Blender's console)")
                if "progress" in reply:
                    if progress is not None:
                        progress(reply["progress"])
                elif "error" in reply:
                    if reply.get("cancelled"):
                        raise Cancelled()
                    raise WorkerError(reply["error"], reply.get("exit_code", 1))
                else:
                    return reply["ok"]

    @staticmethod
    def _send(process: subprocess.Popen, message: dict) -> None:
        try:
            process.stdin.write(json.dumps(message) + "\n")
            process.stdin.flush()
        except (OSError, ValueError):  # it died: the reader reports that
            pass

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None


def _now() -> float:
    import time

    return time.monotonic()


def _outputs(fields: dict) -> list[str]:
    """The files a request writes: its ``output``, or each frame's of a shot."""
    if fields.get("output"):
        return [fields["output"]]
    return [target for _number, _source, target in fields.get("frames", ())]


def _remove_temp_files(outputs: list[str]) -> None:
    """The temp files a killed worker may leave next to ``outputs`` (exr.temp_path_for's naming)."""
    for output in outputs:
        target = Path(output)
        for stale in target.parent.glob(f".{target.name}.*.tmp"):
            stale.unlink(missing_ok=True)


# --- the worker process ------------------------------------------------------------------------------

class _QuietAbout(logging.Filter):
    """Leaves out the core's "view layer X lacks passes ...; layer left as is" warnings for layers the
    worker removes from the output afterwards (the compositor's): they would come once per frame."""

    def __init__(self, layers):
        super().__init__()
        self._about = tuple(f"view layer {layer!r} lacks" for layer in layers)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(about in message for about in self._about)


def _without_layers(dc, path: Path, drop: set[str]) -> None:
    """Rewrite the EXR at ``path`` (atomically) without the view layers in ``drop``, if it has any."""
    image = dc.read_exr(path)
    if drop & set(image.layers):
        image.passes = [p for p in image.passes if p.layer not in drop]
        dc.write_exr(image, path)


def _serve() -> int:
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)           # anything a library prints goes to stderr, never into the protocol
    sys.stdout = sys.stderr
    import denoiser_core as dc
    from denoiser_core import devices
    from denoiser_core.memory import keep_freed_memory, release_freed_memory

    keep_freed_memory()  # this process only denoises: large buffers come from its heap
    write_lock = threading.Lock()

    def send(message: dict) -> None:
        with write_lock:
            protocol.write(json.dumps(message) + "\n")

    cancel = threading.Event()
    requests: queue.Queue = queue.Queue()

    def read_requests() -> None:
        for line in sys.stdin:
            message = json.loads(line)
            if message.get("op") == "cancel":
                cancel.set()
            else:
                requests.put(message)
        requests.put(None)

    threading.Thread(target=read_requests, daemon=True).start()
    loaded: dict[tuple, object] = {}

    def denoiser(model, device):
        info = dc.models.resolve_model(model)
        stat = info.path.stat()
        key = (str(info.path), stat.st_mtime_ns, device)
        if key not in loaded:
            loaded.clear()  # one model in memory at a time
            loaded[key] = dc.load_model(str(info.path), device)
        return loaded[key]

    def ran_on(loaded_model, device) -> dict:
        provider = loaded_model.providers[0]
        name = next((n for n, p in devices.DEVICE_PROVIDERS.items() if p[0] == provider), provider)
        return {"device": name, "fallback": "" if name != "cpu" else devices.fallback_reason(device),
                "model": loaded_model.info.name}

    def handle(message: dict) -> dict:
        op = message["op"]
        if op == "probe":
            return {"devices": {n: [s.usable, s.reason] for n, s in devices.probe_devices().items()}}
        if op == "load":
            device = message.get("device", "auto")
            return ran_on(denoiser(message.get("model"), device), device)
        if op == "beauty":  # the denoised beauty as RGBA .npy, for Blender's colour pipeline (PNG)
            import numpy as np

            image = dc.read_exr(message["input"])
            combined = next((p for p in image.passes if p.canonical == "combined"
                             and p.layer != COMPOSITOR_LAYER), None)
            if combined is None:
                raise dc.DenoiserError(f"{message['input']}: no Combined pass", exit_code=1)
            rgba = np.ones((*combined.hwc.shape[:2], 4), np.float32)
            rgba[..., :combined.hwc.shape[2]] = combined.hwc[..., :4]
            np.save(message["output"], rgba)
            return {"output": message["output"]}
        if op == "denoise":
            model = denoiser(message.get("model"), message.get("device", "auto"))
            source, target = Path(message["input"]), Path(message["output"])
            drop = set(message.get("drop_layers", ()))
            image = dc.read_exr(source)
            image.passes = [p for p in image.passes if p.layer not in drop]
            dc.denoise_image(image, model, int(message.get("tile", 0)),
                             lambda fraction: send({"progress": fraction}), cancel.is_set)
            dc.write_exr(image, target)
            return {"output": str(target), **ran_on(model, message.get("device"))}
        if op == "shot":
            return shot(message)
        raise ValueError(f"unknown request {op!r}")

    def shot(message: dict) -> dict:
        """Temporal mode: ``frames`` ([number, input, output], in order) denoised as one shot by
        denoiser_core.shot.denoise_shot, as ``kprcan denoise --temporal`` does. Frames whose output exists
        are skipped (unless ``overwrite``) and hand their stored history to the next frame."""
        from denoiser_core.shot import denoise_shot

        model = denoiser(message.get("model"), message.get("device", "auto"))
        frames = [(int(number), Path(source), Path(target)) for number, source, target in message["frames"]]
        overwrite = bool(message.get("overwrite"))
        to_write = [target for _number, _source, target in frames if overwrite or not target.exists()]
        drop = set(message.get("drop_layers", ()))

        # denoise_shot reads each whole file: the dropped layers are removed from the outputs it wrote
        quiet, core_log = _QuietAbout(drop), logging.getLogger("kprcan")
        core_log.addFilter(quiet)
        try:
            written = denoise_shot(frames, model, tile=int(message.get("tile", 0)), overwrite=overwrite,
                                   progress=lambda fraction: send({"progress": fraction}),
                                   cancel=cancel.is_set)
        finally:
            core_log.removeFilter(quiet)
            for target in to_write if drop else ():
                if target.exists():
                    _without_layers(dc, target, drop)
        return {"output": str(frames[-1][2]), "written": written, **ran_on(model, message.get("device"))}

    while (message := requests.get()) is not None:
        cancel.clear()
        try:
            reply = {"ok": handle(message)}
        except dc.DenoiserError as error:
            reply = {"error": str(error), "exit_code": error.exit_code, "cancelled": cancel.is_set()}
        except OSError as error:
            reply = {"error": str(error), "exit_code": 2}
        except Exception as error:  # a bug: the traceback goes to Blender's console
            import traceback

            traceback.print_exc()
            reply = {"error": f"{type(error).__name__}: {error}", "exit_code": 1}
        finally:
            if message.get("delete_input"):
                _remove_quietly(Path(message["input"]))
        release_freed_memory()  # before replying: an idle worker holds its model, not the frame's buffers
        send(reply)
    return 0


def _remove_quietly(path: Path) -> None:
    """Remove a temporary input the job is done with; failing to (a file still open elsewhere on
    Windows) is said on Blender's console and costs the job nothing."""
    try:
        path.unlink(missing_ok=True)
    except OSError as error:
        print(f"kprcan worker: could not remove {path}: {error}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(_serve())
