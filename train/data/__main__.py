"""ESC-50 data commands: ``python -m train.data {download,check,stats,show,precompute} --help``."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from edge.audio import AudioFileError
from edge.frontend import FrontEnd

from .cache import precompute
from .check import check_dataset
from .download import DEFAULT_URL, DownloadError, download
from .esc50 import DatasetError, read_clips
from .show import plot_clip
from .stats import class_balance, format_table


def run_download(args) -> int:
    root = download(args.to, url=args.url, sha256=args.sha256, keep_archive=args.keep_archive,
                    progress=not args.quiet)
    print(root)
    return 0


def run_check(args) -> int:
    clips, problems = check_dataset(args.dir, full=not args.subset)
    for problem in problems:
        print(problem)
    if problems:
        files = len({p.path for p in problems})
        print(f"FAILED: {len(problems)} problem(s) in {files} file(s)", file=sys.stderr)
        return 1
    scope = "a subset" if args.subset else "the full dataset"
    print(f"OK: {len(clips)} clips ({scope}), {len({c.target for c in clips})} classes, "
          f"{len({c.fold for c in clips})} folds, all 44.1 kHz mono 5 s")
    return 0


def run_stats(args) -> int:
    balance = class_balance(read_clips(args.dir))
    print(json.dumps(balance, indent=2) if args.json else format_table(balance))
    return 0


def run_show(args) -> int:
    out = args.out if args.out is not None else Path(args.clip).with_suffix(".png").name
    print(plot_clip(args.clip, out))
    return 0


def run_precompute(args) -> int:
    from train.melcnn import FRONTEND as MELCNN_FRONTEND  # imports torch, which the other commands do without

    for frontend in (MELCNN_FRONTEND, FrontEnd()):  # MelCNN's 64 bands, ResNet-50's 128
        start = time.perf_counter()
        npy = precompute(args.dir, frontend, cache_dir=args.cache_dir, jobs=args.jobs, force=args.force)
        print(f"{npy} ({frontend.n_mels} mel bands, {time.perf_counter() - start:.1f} s)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m train.data", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("download", help="fetch and unpack ESC-50 (resumable)")
    p.add_argument("--to", type=Path, default=Path("data"), help="folder to unpack into (default: data)")
    p.add_argument("--url", default=DEFAULT_URL, help="archive URL (default: the GitHub master.zip)")
    p.add_argument("--sha256", help="expected SHA-256 of the archive; the download fails if it differs")
    p.add_argument("--keep-archive", action="store_true", help="keep master.zip after unpacking")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run_download)

    p = commands.add_parser("check", help="validate the layout; exit 1 and name every bad file")
    p.add_argument("dir", type=Path, help="ESC-50 folder (DIR, DIR/ESC-50 or DIR/ESC-50-master)")
    p.add_argument("--subset", action="store_true",
                   help="accept any number of clips (skip the 2000 / 40 per class / 400 per fold counts)")
    p.set_defaults(run=run_check)

    p = commands.add_parser("stats", help="clips per class and fold")
    p.add_argument("dir", type=Path)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=run_stats)

    p = commands.add_parser("show", help="PNG of a clip's waveform and log-mel spectrogram")
    p.add_argument("clip", type=Path, help="an audio file")
    p.add_argument("--out", type=Path, help="PNG to write (default: <clip name>.png here)")
    p.set_defaults(run=run_show)

    p = commands.add_parser("precompute", help="build the log-mel feature caches of MelCNN and ResNet-50")
    p.add_argument("dir", type=Path)
    p.add_argument("--cache-dir", type=Path, help="where to store it (default: <dataset>/cache)")
    p.add_argument("--jobs", type=int, help="worker processes (default: all cores)")
    p.add_argument("--force", action="store_true", help="rebuild even if the cache is up to date")
    p.set_defaults(run=run_precompute)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return args.run(args)
    except (DatasetError, DownloadError, AudioFileError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
