"""Feature pipeline timings on real ESC-50 clips -> benchmarks/results/features.json.

- on-the-fly item: read a WAV, run the front end (resample, log-mel, dB, image), make the tensor
  (the book computes its images this way at first: 0.395 s an item);
- cached item: ``LogMelImages[i]`` over the memory-mapped log-mel cache (the book: 0.003 s from PNGs);
- one 5-s window of the front end on a 44.1 kHz clip (resampling to 22.05 kHz included);
- wall time of ``precompute`` for every clip with all cores, into a temporary cache (``--force``).

Numbers for a report must not be taken while training runs; see the shared notes for pausing it.
Usage: python -m benchmarks.features [--data DIR] [--out JSON]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

from edge.atomic import write_json
from benchmarks.measuring import REPO, durations, machine
from edge.audio import load_audio
from edge.frontend import FrontEnd

TARGETS_S = {"precompute_all": 60.0, "cached_item": 0.001, "frontend_window": 0.010}
BOOK_S = {"on_the_fly_item": 0.395, "cached_item": 0.003}


def summary(times: list) -> dict:
    return {"median_s": statistics.median(times), "p90_s": float(np.percentile(times, 90)),
            "min_s": min(times), "n": len(times)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("ESC50_DIR", "data/ESC-50")),
                        help="ESC-50 folder (default: $ESC50_DIR or data/ESC-50)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "features.json")
    parser.add_argument("--items", type=int, default=100, help="on-the-fly items to time (default 100)")
    parser.add_argument("--windows", type=int, default=300, help="front-end calls to time (default 300)")
    parser.add_argument("--cached-items", type=int, default=2000, help="cached items to time (default 2000)")
    parser.add_argument("--precompute-runs", type=int, default=3, help="full precompute runs (default 3)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count(), help="precompute workers (default: all cores)")
    args = parser.parse_args(argv)

    import torch

    from train.data.cache import cache_files, precompute
    from train.data.esc50 import read_clips
    from train.datasets import LogMelImages
    import soxr

    from edge.provenance import git_commit

    clips = read_clips(args.data)
    frontend = FrontEnd()
    rng = np.random.default_rng(0)
    info = machine(soxr=soxr.__version__, torch=torch.__version__)

    # one 5-s window: the same 44.1 kHz clip again and again (after a few warm-up calls)
    wave, rate = load_audio(clips[0].path)
    window = durations(lambda i: frontend(wave, rate), args.windows, warmup=5)

    # on the fly: a different clip every item, as a data loader would see them
    picks = rng.choice(len(clips), size=min(args.items, len(clips)), replace=False)
    on_the_fly = durations(lambda i: torch.from_numpy(frontend(*load_audio(clips[picks[i]].path))), len(picks))

    # full precompute with all cores into a temporary cache, then cached items from it
    with tempfile.TemporaryDirectory(prefix="features-bench-") as cache_dir:
        precompute_runs = durations(lambda i: precompute(args.data, frontend, cache_dir=cache_dir, jobs=args.jobs,
                                                     force=True, progress=False), args.precompute_runs)
        log_mels = np.load(cache_files(args.data, frontend, cache_dir)[0], mmap_mode="r")
        dataset = LogMelImages(log_mels, [c.target for c in clips], frontend)
        order = rng.integers(0, len(dataset), size=args.cached_items)
        dataset[0]  # warm-up: the first item maps the file
        cached = durations(lambda i: dataset[int(order[i])], len(order))

    info["load_average_at_end"] = list(os.getloadavg())
    results = {
        "frontend_window": summary(window),
        "on_the_fly_item": summary(on_the_fly),
        "cached_item": summary(cached),
        "precompute_all": {"clips": len(clips), "jobs": args.jobs, "wall_s": precompute_runs,
                           "median_s": statistics.median(precompute_runs)},
    }
    results["speedup_cached_vs_on_the_fly"] = (results["on_the_fly_item"]["median_s"]
                                               / results["cached_item"]["median_s"])
    checks = {name: {"target_s": target, "measured_s": results[name]["median_s"],
                     "pass": results[name]["median_s"] <= target} for name, target in TARGETS_S.items()}
    report = {
        "benchmark": "features",
        "what": {"frontend_window": "FrontEnd()(waveform, 44100) on one 5-s clip: resample to 22050 Hz, "
                                    "log-mel (128 x 216), dB, 3-channel normalised image",
                 "on_the_fly_item": "load_audio(wav) + FrontEnd() + torch.from_numpy, a different clip each time",
                 "cached_item": "train.datasets.LogMelImages[i] over the float32 .npy memmap, random i",
                 "precompute_all": "train.data.cache.precompute(force=True) of every clip, all cores, "
                                   "into a temporary cache folder"},
        "data": str(args.data),
        "frontend": frontend.to_json(),
        "commit": git_commit("edge", "train") or "unknown",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": info,
        "results": results,
        "targets": checks,
        "all_targets_met": all(c["pass"] for c in checks.values()),
        "book_s": BOOK_S,
    }
    write_json(report, args.out)
    for name, check in checks.items():
        print(f"{name:>16}: median {check['measured_s'] * 1000:9.3f} ms  (target <= {check['target_s'] * 1000:g} ms) "
              f"{'PASS' if check['pass'] else 'FAIL'}")
    print(f" on_the_fly_item: median {results['on_the_fly_item']['median_s'] * 1000:9.3f} ms  "
          f"(book: {BOOK_S['on_the_fly_item'] * 1000:g} ms)")
    print(f"wrote {args.out}")
    return 0 if report["all_targets_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
