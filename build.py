#!/usr/bin/env python3
"""Build the KPRCAN Blender extension: one installable zip per platform in dist/.

    python build.py                          # all platforms, wheels from PyPI (cached in .cache/wheels)
    python build.py --platform linux-x64 --validate
    python build.py --check dist/kprcan_denoiser-0.1.0-linux-x64.zip
    python build.py --wheels-from DIR        # offline: wheels only from DIR
    python build.py --no-wheels              # zip without wheels (uses Blender's own onnxruntime/OpenEXR)
    python build.py --cpu-only               # plain onnxruntime: smaller zips, named ...-cpu.zip
    python build.py --directml               # windows-x64 with onnxruntime-directml: ...-directml.zip

Each zip holds blender_addon/* at its root, a copy of denoiser_core/ (the add-on imports it by that
name), the shipped models (models/*.onnx -> models/, found by denoiser_core next to the package) and
wheels/ with onnxruntime (onnxruntime-gpu on linux-x64 and windows-x64) and OpenEXR for that platform,
listed in the manifest's ``wheels``. numpy is not bundled: Blender ships it. The wheels are downloaded
without dependencies on purpose: onnxruntime's other requirements (protobuf, flatbuffers, sympy, ...)
serve its tooling, not inference.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent
ADDON = REPO / "blender_addon"
CORE = REPO / "denoiser_core"
MODELS = REPO / "models"
DEFAULT_CACHE = REPO / ".cache" / "wheels"
MANIFEST = "blender_manifest.toml"
SKIPPED = ("__pycache__", ".pyc", ".pyo", ".DS_Store")

# Blender platform -> (pip --platform tags, onnxruntime distribution). The tags are the oldest system
# each Blender supports (glibc 2.28, macOS 11): pip accepts wheels built for that system or older.
PLATFORMS = {
    "linux-x64": (("manylinux_2_28_x86_64",), "onnxruntime-gpu"),
    "windows-x64": (("win_amd64",), "onnxruntime-gpu"),
    "macos-arm64": (("macosx_11_0_arm64",), "onnxruntime"),
    "macos-x64": (("macosx_11_0_x86_64",), "onnxruntime"),
}
# OpenEXR: 3.4 is the first whose OpenEXR.File reads every file the core reads (3.2 has no File, 3.3 misreads
# multi-part files), 3.5 the first with multi-threaded compression (set_global_thread_count).
REQUIREMENTS = ("{onnxruntime}>=1.16", "OpenEXR>=3.5")
# Which onnxruntime a zip bundles, and the suffix its name gets (one zip per platform and runtime).
RUNTIMES = {"gpu": "", "cpu": "-cpu", "directml": "-directml"}
DIRECTML_PLATFORMS = ("windows-x64",)
# Python of the Blender releases a build targets -> (blender_version_min, blender_version_max or None)
PYTHON_BLENDER = {"3.11": ("4.2.0", "5.1.0"), "3.13": ("5.1.0", None)}


class BuildError(Exception):
    """A build or validation failure, reported as one line (exit status 1)."""


def log(message: str) -> None:
    print(f"build.py: {message}", flush=True)


def download_wheels(platform: str, python: str, cache: Path, offline_dir: Path | None,
                    runtime: str = "gpu") -> list[Path]:
    """The wheels for ``platform`` (one per requirement), downloaded into ``cache`` (or found offline)."""
    tags, onnxruntime = PLATFORMS[platform]
    if runtime == "cpu":
        onnxruntime = "onnxruntime"
    elif runtime == "directml":
        onnxruntime = "onnxruntime-directml"
    dest = cache / platform / f"py{python}"
    dest.mkdir(parents=True, exist_ok=True)
    wheels = []
    for requirement in (r.format(onnxruntime=onnxruntime) for r in REQUIREMENTS):
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--python-version", python, "--implementation", "cp", "--dest", str(dest),
                   "--disable-pip-version-check", "--progress-bar", "off"]
        for tag in tags:
            command += ["--platform", tag]
        if offline_dir is not None:
            command += ["--no-index", "--find-links", str(offline_dir)]
        command.append(requirement)
        result = subprocess.run(command, capture_output=True, text=True)
        found = _downloaded_path(result.stdout, dest)
        if result.returncode != 0 or found is None:
            detail = (result.stderr.strip() or result.stdout.strip()).splitlines()
            errors = [line for line in detail if "ERROR" in line] or detail[-1:] or [""]
            raise BuildError(f"{platform}: cannot download {requirement} for Python {python} "
                             f"({', '.join(tags)}): {errors[-1].strip() or 'pip failed'}")
        wheels.append(found)
        log(f"{platform}: {found.name}")
    return wheels


def _downloaded_path(pip_output: str, dest: Path) -> Path | None:
    """The wheel pip just saved or found in ``dest`` ("Saved ..." / "File was already downloaded ...")."""
    for line in reversed(pip_output.splitlines()):
        match = re.search(r"(?:Saved|File was already downloaded)\s+(\S+\.whl)", line)
        if match:
            path = Path(match.group(1))
            return path if path.is_absolute() else dest / path.name
    return None


def manifest_text(platform: str, python: str, wheels: list[Path]) -> str:
    """blender_addon's manifest with this build's wheels, platform and Blender version range."""
    text = (ADDON / MANIFEST).read_text()
    listed = "".join(f'\n    "./wheels/{wheel.name}",' for wheel in wheels)
    listing = f"wheels = [{listed}\n]" if wheels else "wheels = []"
    text = re.sub(r"(?m)^wheels\s*=\s*\[[^\]]*\]", listing, text)
    text = re.sub(r"(?m)^platforms\s*=.*\n", "", text)
    text = text.replace("\nwheels = [", f'\nplatforms = ["{platform}"]\nwheels = [', 1)
    version_min, version_max = PYTHON_BLENDER[python]
    text = re.sub(r'(?m)^blender_version_min\s*=.*$', f'blender_version_min = "{version_min}"', text)
    text = re.sub(r"(?m)^blender_version_max\s*=.*\n", "", text)
    if version_max:
        text = text.replace(f'blender_version_min = "{version_min}"',
                            f'blender_version_min = "{version_min}"\nblender_version_max = "{version_max}"')
    return text


def _files(root: Path):
    for path in sorted(root.rglob("*")):
        if path.is_file() and not any(part in SKIPPED or part.endswith(SKIPPED) for part in path.parts):
            yield path


def build_zip(platform: str, python: str, wheels: list[Path], dist: Path, runtime: str = "gpu") -> Path:
    """Write dist/<id>-<version>-<platform>[-cpu|-directml][-py313].zip atomically; returns its path.

    The zip gets the permissions of any new file (mkstemp makes its temp file 0600, which would leave a
    zip other users of a shared install folder cannot read).
    """
    manifest = manifest_text(platform, python, wheels)
    ext_id = re.search(r'(?m)^id\s*=\s*"([^"]+)"', manifest).group(1)
    version = re.search(r'(?m)^version\s*=\s*"([^"]+)"', manifest).group(1)
    suffix = RUNTIMES[runtime] + ("" if python == "3.11" else f"-py{python.replace('.', '')}")
    target = dist / f"{ext_id}-{version}-{platform}{suffix}.zip"
    dist.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=dist, prefix=f".{target.name}.", suffix=".tmp")
    temp = Path(temp_name)
    try:
        with open(handle, "wb") as stream, zipfile.ZipFile(stream, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(MANIFEST, manifest)
            for path in _files(ADDON):
                if path.name != MANIFEST:
                    archive.write(path, path.relative_to(ADDON).as_posix())
            for path in _files(CORE):
                archive.write(path, (Path("denoiser_core") / path.relative_to(CORE)).as_posix())
            for path in sorted(MODELS.glob("*.onnx")) if MODELS.is_dir() else []:
                archive.write(path, f"models/{path.name}")
            for wheel in wheels:  # already compressed: store as is
                archive.write(wheel, f"wheels/{wheel.name}", compress_type=zipfile.ZIP_STORED)
        umask = os.umask(0)
        os.umask(umask)
        temp.chmod(0o666 & ~umask)
        temp.replace(target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return target


def expected_models() -> list[str]:
    return sorted(path.name for path in MODELS.glob("*.onnx")) if MODELS.is_dir() else []


# --- validation --------------------------------------------------------------------------------

WHEEL_PLATFORM = {  # Blender platform -> pattern its wheels' platform tags must match
    "linux-x64": r"manylinux.*_x86_64|linux_x86_64", "windows-x64": r"win_amd64",
    "macos-arm64": r"macosx_\d+_\d+_(arm64|universal2)", "macos-x64": r"macosx_\d+_\d+_(x86_64|universal2)",
}
REQUIRED_FILES = ("__init__.py", "compat.py", "denoise.py", "denoiser_core/__init__.py",
                  "denoiser_core/passes.py")
SHORT_TEXT = re.compile(r"^[^\n]{1,64}(?<![.!?,;:])$")  # Blender: <= 64 characters, no final punctuation


def check_zip(path: Path, expected_models: list[str] | None, platform: str | None = None,
              require_wheels: bool = True) -> dict:
    """Raise BuildError naming the first problem with an extension zip; return its manifest."""
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as error:
        raise BuildError(f"{path}: not a readable zip ({error})") from None
    with archive:
        names = set(archive.namelist())
        if MANIFEST not in names:
            raise BuildError(f"{path}: no {MANIFEST} at the zip root")
        try:
            manifest = tomllib.loads(archive.read(MANIFEST).decode())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise BuildError(f"{path}: {MANIFEST} does not parse ({error})") from None
        _check_manifest(path, manifest, platform)
        for required in REQUIRED_FILES:
            if required not in names:
                raise BuildError(f"{path}: {required} missing")
        for name in names:
            if "__pycache__" in name or name.endswith(".pyc"):
                raise BuildError(f"{path}: contains compiled Python ({name})")
            if name.endswith(".py"):
                try:
                    compile(archive.read(name), name, "exec")
                except SyntaxError as error:
                    raise BuildError(f"{path}: {name} does not compile ({error})") from None
        _check_wheels(path, manifest, names, require_wheels)
        models = sorted(n.split("/", 1)[1] for n in names if n.startswith("models/") and n.endswith(".onnx"))
        if expected_models is not None and models != sorted(expected_models):
            raise BuildError(f"{path}: models {models} differ from models/ in the repo {expected_models}")
    return manifest


def _check_manifest(path: Path, manifest: dict, platform: str | None) -> None:
    def bad(problem: str) -> BuildError:
        return BuildError(f"{path}: {MANIFEST}: {problem}")

    for key in ("schema_version", "id", "version", "name", "tagline", "maintainer", "type",
                "blender_version_min", "license"):
        if not isinstance(manifest.get(key), (str, list)) or not manifest[key]:
            raise bad(f"{key} missing or empty")
    if manifest["schema_version"] != "1.0.0":
        raise bad(f"schema_version {manifest['schema_version']!r} (expected 1.0.0)")
    if not re.fullmatch(r"[a-z][a-z0-9_]*", manifest["id"]):
        raise bad(f"id {manifest['id']!r} must be lowercase letters, digits and underscores")
    if manifest["type"] != "add-on" or not re.fullmatch(r"\d+\.\d+\.\d+", manifest["version"]):
        raise bad("type must be add-on and version X.Y.Z")
    if not SHORT_TEXT.match(manifest["tagline"]):
        raise bad("tagline must be 1-64 characters without final punctuation")
    if not all(isinstance(item, str) and item.startswith("SPDX:") for item in manifest["license"]):
        raise bad("license entries must be SPDX:<identifier>")
    for permission, reason in manifest.get("permissions", {}).items():
        if permission not in ("files", "network", "clipboard", "camera", "microphone"):
            raise bad(f"unknown permission {permission!r}")
        if not isinstance(reason, str) or not SHORT_TEXT.match(reason):
            raise bad(f"permission {permission!r} needs a reason of 1-64 characters, no final punctuation")
    platforms = manifest.get("platforms", [])
    if any(p not in PLATFORMS for p in platforms) or (platform and platforms != [platform]):
        raise bad(f"platforms {platforms} (expected {[platform] if platform else sorted(PLATFORMS)})")


def _check_wheels(path: Path, manifest: dict, names: set[str], require_wheels: bool) -> None:
    listed = manifest.get("wheels", [])
    present = {n for n in names if n.startswith("wheels/") and n.endswith(".whl")}
    for wheel in listed:
        if not wheel.startswith("./wheels/") or wheel[2:] not in names:
            raise BuildError(f"{path}: manifest lists {wheel}, which is not in the zip")
    unlisted = sorted(present - {w[2:] for w in listed})
    if unlisted:
        raise BuildError(f"{path}: wheels not listed in the manifest: {unlisted}")
    distributions = {Path(w).name.split("-")[0].lower() for w in listed}
    if "numpy" in distributions:
        raise BuildError(f"{path}: bundles numpy, which Blender ships (two numpy copies conflict)")
    has_runtime = bool({"onnxruntime", "onnxruntime_gpu", "onnxruntime_directml"} & distributions)
    if require_wheels and not (has_runtime and "openexr" in distributions):
        raise BuildError(f"{path}: needs onnxruntime and OpenEXR wheels, has {sorted(distributions)}")
    for platform in manifest.get("platforms", []):
        for wheel in listed:
            tag = Path(wheel).stem.split("-")[-1]
            if tag != "any" and not any(re.fullmatch(WHEEL_PLATFORM[platform], t) for t in tag.split(".")):
                raise BuildError(f"{path}: {Path(wheel).name} is not for {platform}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--platform", action="append", choices=sorted(PLATFORMS),
                        help="platform to build (repeatable; default: all)")
    parser.add_argument("--dist", type=Path, default=REPO / "dist", help="output folder (default: dist/)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="wheel download cache")
    parser.add_argument("--python-version", default="3.11", choices=sorted(PYTHON_BLENDER),
                        help="Blender's Python: 3.11 for Blender 4.2-5.0 (default), 3.13 for 5.1+")
    wheels = parser.add_mutually_exclusive_group()
    wheels.add_argument("--wheels-from", type=Path, help="take wheels only from this folder (offline)")
    wheels.add_argument("--no-wheels", action="store_true", help="bundle no wheels")
    runtime = parser.add_mutually_exclusive_group()
    runtime.add_argument("--cpu-only", action="store_true",
                         help="onnxruntime instead of onnxruntime-gpu (zip name ends in -cpu)")
    runtime.add_argument("--directml", action="store_true",
                         help="onnxruntime-directml: any DirectX 12 GPU on Windows (windows-x64 only; "
                              "zip name ends in -directml)")
    parser.add_argument("--validate", action="store_true", help="check each zip after building it")
    parser.add_argument("--check", type=Path, nargs="+", metavar="ZIP", help="only validate these zips")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.check:
            for path in args.check:
                check_zip(path, expected_models=None)
                log(f"{path}: valid")
            return 0
        if args.wheels_from is not None and not args.wheels_from.is_dir():
            raise BuildError(f"{args.wheels_from}: no such folder (--wheels-from)")
        if not (CORE / "__init__.py").is_file():
            raise BuildError(f"{CORE}: denoiser_core package missing")
        runtime = "cpu" if args.cpu_only else "directml" if args.directml else "gpu"
        platforms = args.platform or (DIRECTML_PLATFORMS if runtime == "directml" else sorted(PLATFORMS))
        if runtime == "directml" and set(platforms) - set(DIRECTML_PLATFORMS):
            raise BuildError(f"--directml builds only {', '.join(DIRECTML_PLATFORMS)} "
                             "(onnxruntime-directml is for Windows)")
        for platform in platforms:
            wheels = [] if args.no_wheels else download_wheels(
                platform, args.python_version, args.cache, args.wheels_from, runtime)
            target = build_zip(platform, args.python_version, wheels, args.dist, runtime)
            if args.validate:
                check_zip(target, expected_models=expected_models(), platform=platform,
                          require_wheels=not args.no_wheels)
            log(f"{target} ({target.stat().st_size / 1e6:.1f} MB){' valid' if args.validate else ''}")
    except BuildError as error:
        print(f"build.py: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
