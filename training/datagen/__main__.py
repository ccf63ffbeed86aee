"""Command line of the training-data factory.

    python -m training.datagen render --out data --split train --views 300        # procedural views
    python -m training.datagen render --out data --split val --views 6 --resolution 256 256 --ref-spp 4096
    python -m training.datagen render --out data/test384 --split test --first 102 --views 6 \
        --resolution 384 256 --ref-spp 1024 --kinds studio closeup exterior interior volume caustics
    python -m training.datagen render --out data --blend scenes/*.blend --views 20 --frames 1 10 20
    python -m training.datagen pack --out data --split train                        # incremental
    python -m training.datagen summary --out data --docs docs                       # stats + contact sheet
    python -m training.datagen bundle --out b.zip --whole data/packed/val-full --fill data/packed/train-full
    python -m training.datagen unbundle b.zip --out data/bundle                     # on the other machine
    python -m training.datagen bundle --out b2.zip --fill data/packed/train-full --max-mb 60 --after b.zip
    python -m training.datagen unbundle b.zip b2.zip --out data/bundle              # parts join
"""

from __future__ import annotations

import argparse
import logging
import sys
import zipfile
from pathlib import Path

from training.datagen.scenes import KINDS, STRESS_KINDS


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard must look like 0/4, got {text!r}") from None
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"--shard {text}: need 0 <= i < N")
    return i, n


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.datagen", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("render", help="render views (resumable)")
    r.add_argument("--out", type=Path, required=True, help="output root (EXRs, manifest)")
    r.add_argument("--split", choices=["train", "val", "test"], default="train")
    r.add_argument("--views", type=int, default=300, help="number of views (scene seeds) in the run")
    r.add_argument("--first", type=int, default=0, help="index of the first view (extends a run)")
    r.add_argument("--resolution", type=int, nargs=2, default=(128, 128), metavar=("W", "H"))
    r.add_argument("--spp", type=int, nargs="+", default=(4, 16, 64), help="noisy sample counts (even)")
    r.add_argument("--ref-spp", type=int, default=256)
    r.add_argument("--jobs", type=int, default=1, help="render processes at once")
    r.add_argument("--threads", type=int, default=2, help="Cycles threads per render process")
    r.add_argument("--shard", type=parse_shard, default=(0, 1), help="i/N: render every N-th view")
    r.add_argument("--blend", nargs="+", default=[], help="user .blend files instead of procedural scenes")
    r.add_argument("--frames", type=int, nargs="+", default=[], help="frames to pick from (--blend)")
    r.add_argument("--kinds", nargs="+", default=[], choices=KINDS + STRESS_KINDS, metavar="KIND",
                   help=f"procedural scene kinds in turn, one per view ({', '.join(KINDS + STRESS_KINDS)}; "
                        f"{', '.join(STRESS_KINDS)} only on request); "
                        "default: drawn from each view's seed")
    r.add_argument("--python", default=None, help="interpreter with pip bpy (default: this one)")
    r.add_argument("--log", type=Path, default=None, help="log file (default: OUT/datagen.log)")
    p = sub.add_parser("pack", help="pack finished views into fp16 patch shards (incremental)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--split", choices=["train", "val", "test"], default="train")
    p.add_argument("--patch", type=int, default=64, help="stored patch size (train crops are <= this)")
    p.add_argument("--full", action="store_true", help="store whole images instead of patches (val)")
    p.add_argument("--max-firefly-fraction", type=float, default=0.002)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--denoise-residual", action="store_true",
                   help="specular = everything but diffuse light (emission, environment too); "
                        "writes <folder>-r, for configs with data.denoise_residual: true")
    p.add_argument("--demodulate-specular", action="store_true",
                   help="specular light (divided by Glossy + Transmission Color) and that colour; writes "
                        "<folder>-d (-d-r with --denoise-residual), for data.demodulate_specular: true")
    p.add_argument("--separate-volume", action="store_true",
                   help="volume light (and the residual with --denoise-residual) in a buffer of its own, "
                        "not in the specular one; writes <folder>...-v, for data.separate_volume: true")
    s = sub.add_parser("summary", help="manifest statistics and a contact sheet of references")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--docs", type=Path, default=Path("docs"))
    b = sub.add_parser("bundle", help="packed folders in one small file, for a machine with a small upload")
    b.add_argument("--out", type=Path, required=True, help="the bundle (.zip) to write")
    b.add_argument("--whole", type=Path, nargs="*", default=[], help="packed folders to include entirely")
    b.add_argument("--fill", type=Path, nargs="*", default=[],
                   help="packed folders whose views are added, in random order, while under --max-mb")
    b.add_argument("--max-mb", type=float, default=None, help="size limit of the bundle (MB, 10^6 bytes)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--lossless", action="store_true", help="keep every mantissa bit (about 1.7x larger)")
    b.add_argument("--after", type=Path, nargs="*", default=[], metavar="BUNDLE",
                   help="leave out the --fill views these bundles hold (a dataset in several uploads)")
    u = sub.add_parser("unbundle", help="unpack bundles into packed-shard folders (parts of a folder join)")
    u.add_argument("bundles", type=Path, nargs="+", metavar="bundle")
    u.add_argument("--out", type=Path, required=True, help="folder to unpack into (one subfolder each)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "render":
        from training.datagen import generate, plan

        # every check before the output folder and its log exist: a refused command leaves nothing behind
        for path in args.blend:
            if not Path(path).is_file():
                print(f"error: no such .blend file: {path}", file=sys.stderr)
                return 2
        if args.kinds and args.blend:
            print("error: --kinds picks procedural scenes and cannot be combined with --blend",
                  file=sys.stderr)
            return 2
        if any(n % 2 for n in args.spp):
            print("error: --spp values must be even (each is rendered as two halves)", file=sys.stderr)
            return 2
        args.out.mkdir(parents=True, exist_ok=True)
        logging.basicConfig(filename=args.log or args.out / "datagen.log", level=logging.INFO,
                            format="%(asctime)s %(levelname)s %(message)s")
        settings = plan.Settings(split=args.split, views=args.views, first=args.first,
                                 resolution=tuple(args.resolution), spp=tuple(args.spp),
                                 ref_spp=args.ref_spp, threads=args.threads, blends=args.blend,
                                 frames=args.frames, kinds=tuple(args.kinds))
        generate.run(settings, args.out, jobs=args.jobs, shard=args.shard, python=args.python)
        return 0
    if args.command == "pack":
        from training.datagen import pack

        try:
            stats = pack.pack_split(args.out, args.split, patch=args.patch, full=args.full,
                                    max_firefly_fraction=args.max_firefly_fraction, seed=args.seed,
                                    denoise_residual=args.denoise_residual,
                                    demodulate_specular=args.demodulate_specular,
                                    separate_volume=args.separate_volume)
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(stats)
        return 0
    if args.command in ("bundle", "unbundle"):
        from training.datagen import bundle

        try:
            if args.command == "bundle":
                if not args.whole and not args.fill:
                    raise ValueError("give --whole and/or --fill packed folders")
                if args.out.exists():
                    raise ValueError(f"{args.out} exists; choose another --out or remove it")
                def report(name, shards, size):
                    print(f"\r{name}: {shards} shards, {size / 1e6:.1f} MB", end="", file=sys.stderr)
                stats = bundle.write_bundle(args.out, args.whole, args.fill, args.max_mb, args.seed,
                                            args.lossless, progress=report, after=args.after)
                print(file=sys.stderr)
            else:
                stats = {}
                for path in args.bundles:
                    for name, shards in bundle.extract_bundle(path, args.out).items():
                        stats[name] = stats.get(name, 0) + shards
        except (ValueError, OSError, zipfile.BadZipFile) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(stats)
        return 0
    if args.command == "summary":
        from training.datagen import summary

        print(summary.write_summary(args.out, args.docs))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
