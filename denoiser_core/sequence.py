"""Turning the CLI's inputs and ``-o`` into (input, output) pairs: single files, folders, #### sequences.

``shot_####.exr`` follows Blender's convention: the run of ``#`` is the frame number, zero-padded to at least
that many digits. Input patterns are expanded by globbing the files that exist; the output pattern gets
the same frame number, padded to its own ``#`` count.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import DenoiserError

_HASHES = re.compile(r"#+")


def is_pattern(text: str) -> bool:
    return "#" in Path(text).name and not Path(text).exists()


def frame_digits(pattern: str) -> int:
    """Length of the one run of ``#`` in the file name of ``pattern`` (the frame number's minimum width)."""
    hashes = _HASHES.findall(Path(pattern).name)
    if len(hashes) != 1:
        raise DenoiserError(f"{pattern}: use one run of # for the frame number")
    return len(hashes[0])


def expand_pattern(pattern: str) -> list[tuple[int, Path]]:
    """(frame, path) of existing files matching ``pattern``, by frame number."""
    path = Path(pattern)
    width = frame_digits(pattern)
    head, tail = _HASHES.split(path.name)
    regex = re.compile(re.escape(head) + rf"(-?\d{{{width},}})" + re.escape(tail) + "$")
    folder = path.parent
    if not folder.is_dir():
        raise DenoiserError(f"{pattern}: folder {folder} does not exist")
    frames = []
    for candidate in folder.iterdir():
        match = regex.match(candidate.name)
        if match and candidate.is_file():
            frames.append((int(match.group(1)), candidate))
    if not frames:
        raise DenoiserError(f"{pattern}: no files match")
    return sorted(frames)


def frame_path(pattern: str, frame: int) -> Path:
    """``out/shot_####.exr``, 12 -> ``out/shot_0012.exr`` (negative frames keep their sign)."""
    width = frame_digits(pattern)
    number = f"-{abs(frame):0{width}d}" if frame < 0 else f"{frame:0{width}d}"
    return Path(pattern).parent / _HASHES.sub(number, Path(pattern).name)


def _is_folder(output: str) -> bool:
    return output.endswith(("/", os.sep)) or Path(output).is_dir()


def plan_jobs(inputs: list[str], output: str) -> list[tuple[Path, Path]]:
    """(input, output) pairs for ``kprcan denoise INPUTS -o OUTPUT``, checked for clashes before any work."""
    output_is_pattern = "#" in Path(output).name
    jobs: list[tuple[Path, Path]] = []
    multiple = len(inputs) > 1
    for text in inputs:
        if is_pattern(text):
            multiple = True
            for frame, source in expand_pattern(text):
                if output_is_pattern:
                    jobs.append((source, frame_path(output, frame)))
                elif _is_folder(output):
                    jobs.append((source, Path(output) / source.name))
                else:
                    raise DenoiserError(f"-o {output}: a sequence needs an output with #### or a folder/")
        elif _is_folder(output):
            jobs.append((Path(text), Path(output) / Path(text).name))
        elif output_is_pattern:
            raise DenoiserError(f"-o {output}: an output pattern needs an input pattern like shot_####.exr")
        else:
            jobs.append((Path(text), Path(output)))
    if multiple and not (output_is_pattern or _is_folder(output)):
        raise DenoiserError(f"-o {output}: several inputs need an output folder (end it with /)")
    outputs = [o.resolve() for _i, o in jobs]
    if len(set(outputs)) != len(outputs):
        raise DenoiserError("several inputs would write the same output file")
    sources = {i.resolve() for i, _o in jobs}
    clash = next((o for o in outputs if o in sources), None)
    if clash is not None:
        raise DenoiserError(f"{clash}: output is an input file; choose another output path")
    return jobs
