"""``kprcan``: denoise Cycles multilayer EXRs from the command line.

Errors are one line on stderr (``kprcan: error: ...``) with exit code 2 for usage / input problems and 1
for internal ones; ``-v`` adds tracebacks for internal errors. Ctrl+C exits 130 and SIGTERM 143, both after
removing temporary files and releasing claims; a closed stdout (``kprcan models | head -1``) ends quietly.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import traceback

from tqdm import tqdm

from .devices import DEVICE_NAMES
from .errors import DenoiserError, Terminated
from .inference import DEFAULT_TILE
from .memory import keep_freed_memory

log = logging.getLogger("kprcan")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, like every other kprcan error
        self.exit(2, f"kprcan: error: {message} (see {self.prog} --help)\n")


class _TqdmHandler(logging.Handler):
    """Log lines that do not tear tqdm's progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        level = f"{record.levelname.lower()}: " if record.levelno >= logging.WARNING else ""
        tqdm.write(f"kprcan: {level}{record.getMessage()}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    verbosity = argparse.ArgumentParser(add_help=False)
    verbosity.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                           help="only warnings and errors, no progress bars")
    verbosity.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                           help="more detail (providers, timings, tracebacks of internal errors)")
    model = argparse.ArgumentParser(add_help=False)
    model.add_argument("--model", metavar="NAME|PATH", help="model name or .onnx file (default: fast)")
    model.add_argument("--device", default="auto", choices=DEVICE_NAMES,
                       help="where to run; an unavailable device falls back to the CPU (default: auto)")
    model.add_argument("--tile", type=_positive_int, default=DEFAULT_TILE,
                       help="largest tile edge in pixels; smaller uses less memory (default: chosen per "
                            "image, a 1080p frame in one tile)")

    parser = _Parser(prog="kprcan", parents=[verbosity],
                     description="Kernel-predicting neural denoiser for Blender Cycles multilayer EXRs.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    denoise = commands.add_parser(
        "denoise", parents=[verbosity, model], help="denoise EXR files or #### sequences",
        description="Denoise multilayer EXRs. A sequence: 'shot_####.exr' -o 'out/shot_####.exr'. "
                    "Frames whose output exists are skipped unless --overwrite.")
    denoise.add_argument("inputs", nargs="+", metavar="INPUT", help="EXR file(s) or a shot_####.exr pattern")
    denoise.add_argument("-o", "--output", required=True, help="output file, folder/ or out_####.exr pattern")
    denoise.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    denoise.add_argument("--half", action="store_true", help="write half floats (default: float32)")
    denoise.add_argument("--max-memory", type=_positive_gib, metavar="GIB", default=None,
                         help="memory in GiB a frame is kept within, where that does not multiply the "
                              "work; more is faster. Without it, 3 for frames too large for one window "
                              "(4K); a value you give, 3 included, applies to every frame, so 1080p is "
                              "split too. Ignored with --tile")
    denoise.add_argument("--temporal", action="store_true",
                         help="denoise a shot_####.exr sequence as one shot, each frame blended with the "
                              "previous one (needs the Vector pass; see docs/temporal.md)")
    info = commands.add_parser("info", parents=[verbosity], help="passes in an EXR and what each model needs")
    info.add_argument("input")
    info.add_argument("--model", metavar="NAME|PATH", help="check against this model only")
    commands.add_parser("models", parents=[verbosity], help="list installed models and devices")
    demo = commands.add_parser("demo", parents=[verbosity, model],
                               help="denoise the example render in examples/")
    demo.add_argument("--examples", metavar="FOLDER", help="folder with noisy.exr and reference.exr")
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _positive_gib(text: str) -> int:
    """GiB as given on the command line -> bytes."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of GiB") from None
    if not 0.01 <= value < float("inf"):
        raise argparse.ArgumentTypeError("must be a number of GiB of at least 0.01, e.g. 3 or 0.5")
    return int(value * 2**30)


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.WARNING if getattr(args, "quiet", False) else logging.INFO
    if getattr(args, "verbose", False):
        level = logging.DEBUG
    log.handlers[:] = [_TqdmHandler()]
    log.setLevel(level)
    log.propagate = False


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args)
    keep_freed_memory()  # this process only denoises: large buffers come from its heap
    with _terminate_on_signals():
        try:  # the signals may also land while an error below is being reported
            return _run(args)
        except KeyboardInterrupt:
            print("kprcan: interrupted", file=sys.stderr)
            return 130
        except Terminated as terminated:
            print(f"kprcan: terminated ({signal.Signals(terminated.signal_number).name})", file=sys.stderr)
            return 128 + terminated.signal_number


def _run(args: argparse.Namespace) -> int:
    try:
        from . import commands  # after logging is set up; keeps `kprcan --help` quick

        code = getattr(commands, f"run_{args.command}")(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except DenoiserError as error:
        print(f"kprcan: error: {error.message}", file=sys.stderr)
        return error.exit_code
    except BrokenPipeError:  # the reader went away (`| head`): like other Unix tools, stop quietly
        _discard_stdout()
        return 0
    except MemoryError:  # the network's own allocations are reported by inference with a hint
        print("kprcan: error: out of memory reading, preparing or writing the frame (its passes must fit in "
              "memory: a smaller --tile does not help here)", file=sys.stderr)
        return 1
    except Exception as error:  # a bug: still one line unless -v asks for the traceback
        if getattr(args, "verbose", False):
            traceback.print_exc()
        print(f"kprcan: internal error: {type(error).__name__}: {error}", file=sys.stderr)
        return 1


@contextlib.contextmanager
def _terminate_on_signals():
    """SIGTERM raises Terminated in the main thread (once: a second one during cleanup is ignored)."""
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return

    def terminate(number, _frame):
        signal.signal(number, signal.SIG_IGN)
        raise Terminated(number)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _discard_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no descriptor to replace (stdout closed or not a file)
        pass


if __name__ == "__main__":
    sys.exit(main())
