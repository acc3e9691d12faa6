"""numpy's FFT against scipy's in the front end, timed in turn in one run -> benchmarks/results/stft.json.

    python -m benchmarks.stft              # stop training runs first

Why edge.frontend.power_spectrogram calls scipy.fft.rfft: the front end of one 5-s window at 44.1 kHz, and the whole
window of the listener's default models (front end + inference at 2 threads), each with numpy.fft.rfft and with
scipy.fft.rfft. The two alternate in short rounds, so that a shared host that slows down slows both alike; the
report gives medians, p95 and the ratio, and the largest difference between the probabilities they lead to.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import scipy
import scipy.fft

import edge.frontend
from benchmarks.edge import window
from benchmarks.measuring import REPO, durations, machine, median_p95_ms, shown_path
from edge.atomic import write_json
from edge.classifier import Classifier, averaged
from edge.listen import default_models
from edge.provenance import git_commit

RESULT = REPO / "benchmarks" / "results" / "stft.json"
FFTS = {"numpy": np.fft.rfft, "scipy": scipy.fft.rfft}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stft", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=40, help="rounds of each FFT in turn")
    parser.add_argument("--calls", type=int, default=10, help="timed calls of each measurement per round")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args(argv)
    import onnxruntime

    files = default_models()
    models = averaged([Classifier(f, threads=2) for f in files])
    signal = window()
    times = {(fft, part): [] for fft in FFTS for part in ("frontend", "window")}
    probabilities = {}
    try:
        for _ in range(args.rounds):
            for name, rfft in FFTS.items():
                edge.frontend.rfft = rfft  # what power_spectrogram calls
                times[name, "frontend"] += durations(lambda i: models.features(signal, 44100), args.calls, warmup=2)
                times[name, "window"] += durations(lambda i: models.predict(signal, 44100), args.calls)
        for name, rfft in FFTS.items():
            edge.frontend.rfft = rfft
            probabilities[name] = models.predict(signal, 44100)
    finally:
        edge.frontend.rfft = scipy.fft.rfft

    def summary(part: str) -> dict:
        out = {name: median_p95_ms(times[name, part]) for name in FFTS}
        out["numpy_over_scipy"] = round(out["numpy"]["median_ms"] / out["scipy"]["median_ms"], 2)
        return out

    report = {"command": "python -m benchmarks.stft", "commit": git_commit(),
              "machine": machine(onnxruntime=onnxruntime.__version__, scipy=scipy.__version__),
              "models": "+".join(map(shown_path, files)),
              "statistic": f"5-s window at 44.1 kHz; {args.rounds} rounds of {args.calls} calls per FFT, in turn; "
                           "median and p95",
              "frontend": summary("frontend"), "window_at_2_threads": summary("window"),
              "max_probability_difference": float(np.abs(probabilities["numpy"] - probabilities["scipy"]).max())}
    write_json(report, args.out)
    for part in ("frontend", "window_at_2_threads"):
        r = report[part]
        print(f"{part}: numpy {r['numpy']['median_ms']:.2f} ms, scipy {r['scipy']['median_ms']:.2f} ms "
              f"({r['numpy_over_scipy']}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
