"""Feature cache: every clip's log-mel computed once, stored as one float32 .npy per front end.

Files, by default in ``<dataset>/cache/`` (``<dataset>`` being the folder that holds ``meta/esc50.csv``):

- ``logmel-<digest>.npy``: (N, n_mels, n_frames) float32 dB, rows in ``read_clips()`` order
  (2000 x 128 x 216 x 4 bytes = 221 MB for the default front end);
- ``logmel-<digest>.json``: the index: the log-mel parameters and every clip's name, size and mtime.

``<digest>`` is ``FrontEnd.log_mel_digest()``: front ends with different log-mels get their own cache, and
those that only make different images from the same log-mels (channels, normalisation, dB or PCEN) share
one. The index is compared with the clips on disk at every load: a changed dataset is rebuilt, never served
stale.

Why not PNG images, as the book does? A PNG stores 8 bits per channel, which quantises the 80-dB range to
steps of 0.3 dB (after a colour map the network has to undo), and reading one item costs a file open plus
a zlib decode. One .npy is lossless and is opened once with ``np.load(mmap_mode="r")``; an item is then a
slice of a memory-mapped array, read from the page cache in microseconds.
"""
from __future__ import annotations

import json
import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from edge.audio import load_audio
from edge.frontend import FrontEnd

from .esc50 import DatasetError, find_root, read_clips
from edge.atomic import staged


def cache_files(dataset_dir, frontend: FrontEnd, cache_dir=None) -> tuple:
    """(array .npy, index .json) paths of the cache for this dataset and front end."""
    folder = Path(cache_dir) if cache_dir is not None else find_root(dataset_dir) / "cache"
    stem = f"logmel-{frontend.log_mel_digest()}"
    return folder / f"{stem}.npy", folder / f"{stem}.json"


def fingerprint(clips) -> list:
    """[name, size, mtime_ns] of every clip: what the cache was computed from."""
    rows = []
    for clip in clips:
        try:
            stat = clip.path.stat()
        except FileNotFoundError:
            raise DatasetError(f"{clip.path}: listed in meta/esc50.csv but missing "
                               "(run `python -m train.data check`)") from None
        rows.append([clip.path.name, stat.st_size, stat.st_mtime_ns])
    return rows


def is_current(npy: Path, index: Path, clips, frontend: FrontEnd) -> bool:
    """True if the cache exists, holds this front end's log-mels of exactly these clips, and has their shape."""
    try:
        meta = json.loads(index.read_text())
        shape = np.load(npy, mmap_mode="r").shape
    except (OSError, ValueError):
        return False
    return (meta.get("log_mel") == frontend.log_mel_json() and meta.get("clips") == fingerprint(clips)
            and shape == (len(clips), frontend.n_mels, frontend.n_frames))


def precompute(dataset_dir, frontend: FrontEnd, cache_dir=None, jobs: int = None, force: bool = False,
               progress: bool = True) -> Path:
    """Build the cache (all cores by default) unless an up-to-date one exists; returns the .npy path."""
    clips = read_clips(dataset_dir)
    npy, index = cache_files(dataset_dir, frontend, cache_dir)
    npy.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(npy.with_suffix(".lock")):  # a second process waits, then finds the cache ready
        if not force and is_current(npy, index, clips, frontend):
            return npy
        index.unlink(missing_ok=True)  # an old index must never vouch for a half-replaced array
        with staged(npy) as tmp:
            shape = (len(clips), frontend.n_mels, frontend.n_frames)
            np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape).flush()
            fill_parallel(tmp, frontend, [c.path for c in clips], jobs or os.cpu_count() or 1, progress)
        with staged(index) as tmp:
            tmp.write_text(json.dumps({"log_mel": frontend.log_mel_json(), "digest": frontend.log_mel_digest(),
                                       "shape": list(shape), "clips": fingerprint(clips)}) + "\n")
    return npy


def load_log_mels(dataset_dir, frontend: FrontEnd, cache_dir=None, progress: bool = True) -> tuple:
    """(read-only memmap (N, n_mels, n_frames) float32 in read_clips() order, clips); builds the cache if needed."""
    npy = precompute(dataset_dir, frontend, cache_dir, progress=progress)
    return np.load(npy, mmap_mode="r"), read_clips(dataset_dir)


def fill_parallel(npy: Path, frontend: FrontEnd, paths: list, jobs: int, progress: bool) -> None:
    """Write every clip's log-mel into the preallocated .npy, in contiguous chunks across ``jobs`` processes."""
    from tqdm import tqdm

    size = max(1, min(32, math.ceil(len(paths) / (4 * jobs))))
    chunks = [(start, paths[start:start + size]) for start in range(0, len(paths), size)]
    with tqdm(total=len(paths), unit="clip", desc="log-mels", disable=not progress) as bar:
        if jobs == 1:
            for start, chunk in chunks:
                bar.update(fill(npy, frontend.to_json(), start, chunk))
            return
        # spawn: safe even when the caller has torch (and its thread pools) loaded
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(fill, npy, frontend.to_json(), start, chunk) for start, chunk in chunks]
            try:
                for future in as_completed(futures):
                    bar.update(future.result())
            except BaseException:  # a bad clip or Ctrl-C: drop the queued chunks instead of finishing them
                pool.shutdown(cancel_futures=True)
                raise


def fill(npy: Path, frontend_json: str, start: int, paths: list) -> int:
    """Worker: log-mels of ``paths`` into rows ``start...`` of the .npy; returns how many it wrote."""
    frontend = FrontEnd.from_json(frontend_json)
    out = np.load(npy, mmap_mode="r+")
    for i, path in enumerate(paths):
        out[start + i] = frontend.log_mel(*load_audio(path))
    out.flush()
    return len(paths)


@contextmanager
def exclusive(lock_path: Path):
    """Hold an exclusive advisory lock on ``lock_path`` (POSIX); without fcntl the rename alone keeps files whole."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
