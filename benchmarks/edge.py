"""Edge performance of the shipped models (or of any exported ones) -> benchmarks/results/edge.json.

    python -m benchmarks.edge              # every model in edge/models/ and the default set; stop training runs first
    python -m benchmarks.edge --models RUN/model.int8.onnx edge/models/melcnn-int8.onnx --out FILE.json
    python -m benchmarks.edge --models A.onnx+B.onnx   # two models averaged on each window, as --model A B runs them

For each model (or set), what one window costs the listener: the front end (a 5-s window at 44.1 kHz ->
the model's input, edge.classifier.Classifier.features) plus onnxruntime inference, timed together
and apart at 1 and 2 threads (median and p95 of repeated calls); the time to load the model; and the
peak memory of ``python -m edge.listen --file edge/examples/`` with it. Torch is never imported: these
are the numbers of the ``edge`` extra.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from edge.atomic import write_json
from edge.classifier import Classifier, averaged
from edge.provenance import git_commit
from benchmarks.measuring import (REPO, durations, machine, median_p95_ms, model_files, model_names,
                                  shipped_models, shown_path)

MODELS = REPO / "edge" / "models"
EXAMPLES = REPO / "edge" / "examples"
RESULT = REPO / "benchmarks" / "results" / "edge.json"
TARGET_MS = 10.0  # front end + inference per window at 2 threads (issue: the log-mel edge default)


def timed(fn, repeats: int, warmup: int = 5) -> dict:
    """Median and p95 wall time of ``fn()`` in milliseconds."""
    return {**median_p95_ms(durations(lambda i: fn(), repeats, warmup)), "repeats": repeats}


def window(rate: int = 44100, seconds: float = 5.0) -> np.ndarray:
    """A 5-s test window: noise with a tone, like a busy microphone."""
    rng = np.random.default_rng(0)
    t = np.arange(int(rate * seconds)) / rate
    return (0.1 * rng.standard_normal(t.size) + 0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def listener_peak_rss_mb(files: tuple) -> float:
    """Peak resident memory of ``edge.listen --model FILES --file edge/examples/``, from getrusage in a
    fresh parent process (a process's children's peak covers all of its children)."""
    helper = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True);"
              "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    listen = [sys.executable, "-m", "edge.listen", "--model", *map(str, files), "--file", str(EXAMPLES), "--json"]
    out = subprocess.run([sys.executable, "-c", helper, *listen], cwd=REPO, capture_output=True, text=True, check=True)
    return round(int(out.stdout) * 1024 / 1e6, 1)


def measure_model(files: tuple, repeats: int) -> dict:
    """One model, or several averaged as the listener runs them (a shared front end, one inference each)."""
    entry = {"file": "+".join(map(shown_path, files)), "bytes": sum(f.stat().st_size for f in files)}
    start = time.perf_counter()
    averaged([Classifier(f) for f in files])
    entry["load_ms"] = round((time.perf_counter() - start) * 1000, 1)
    signal = window()
    for threads in (1, 2):
        classifier = averaged([Classifier(f, threads=threads) for f in files])
        x = classifier.features(signal, 44100)
        entry[f"threads_{threads}"] = {
            "frontend": timed(lambda: classifier.features(signal, 44100), repeats),
            "inference": timed(lambda: classifier.infer(x), repeats),
            "window": timed(lambda: classifier.predict(signal, 44100), repeats),
        }
    entry["listener_peak_rss_mb"] = listener_peak_rss_mb(files)
    window_ms = entry["threads_2"]["window"]["median_ms"]
    entry["target"] = {"window_ms_at_2_threads": window_ms, "limit_ms": TARGET_MS, "passed": window_ms <= TARGET_MS}
    return entry


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.edge", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=model_files, nargs="+", metavar="FILE.onnx[+FILE.onnx]",
                        help="exported models to measure, e.g. a candidate beside the shipped one; A+B: the two "
                             "averaged on each window (default: every model in edge/models/, and the listener's "
                             "default set when it has several)")
    parser.add_argument("--repeats", type=int, default=200, help="timed calls per measurement")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args(argv)
    import onnxruntime

    models = args.models or shipped_models(MODELS)
    if not models:
        print(f"error: no models in {MODELS}", file=sys.stderr)
        return 2
    missing = [str(path) for files in models for path in files if not path.is_file()]
    if missing:
        print(f"error: --models: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        names = model_names(models)
    except ValueError as err:
        print(f"error: --models: {err}", file=sys.stderr)
        return 2
    command = "python -m benchmarks.edge" + (
        " --models " + " ".join("+".join(map(shown_path, files)) for files in models) if args.models else "")
    report = {"command": command, "commit": git_commit(),
              "machine": machine(onnxruntime=onnxruntime.__version__),
              "statistic": "per 5-s window at 44.1 kHz, batch 1, onnxruntime CPU; median and p95 of repeated calls",
              "models": {}}
    for name, files in zip(names, models):
        entry = report["models"][name] = measure_model(files, args.repeats)
        print(f"{name}: window {entry['threads_2']['window']['median_ms']:.2f} ms at 2 threads "
              f"({entry['threads_1']['window']['median_ms']:.2f} ms at 1), peak RSS {entry['listener_peak_rss_mb']} MB")
    report["machine"]["load_average_1min_at_end"] = os.getloadavg()[0]  # other work on the machine skews timings
    write_json(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
