"""Training speed of a recipe on this machine -> benchmarks/results/training-<model>-<device>.json.

    python -m benchmarks.training_speed resnet --device cuda --workers 6      # synthetic clips
    python -m benchmarks.training_speed audionet --data data/ESC-50 --device cuda --workers 3
    python -m benchmarks.training_speed resnet -- --weights imagenet          # flags after -- go to the recipe

The recipe runs once with its defaults on the book split (ResNet-50 with ``--weights none`` unless
given: the same network, so the same speed). Without ``--data`` it trains on a synthetic ESC-50 of
the real size (2000 five-second noise clips, 50 classes, 5 folds) in a temporary folder: speed does
not depend on what the clips hold, so its accuracy means nothing. The JSON gives the wall time of the
run and, per stage, the median epoch time and the clips per second of an epoch (the training clips
plus the validation pass).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from edge.atomic import write_json
from benchmarks.measuring import REPO, training_processes
from train import audionet, melcnn, resnet
from train.data.esc50 import parse_splits, read_clips, write_dataset

RECIPES = {"audionet": audionet.main, "melcnn": melcnn.main, "resnet": resnet.main}
FOLDS = 5


def synthetic_esc50(root: Path, classes: int = 50, per_fold: int = 8, sample_rate: int = 22050,
                    seconds: float = 5.0, seed: int = 0) -> Path:
    """An ESC-50 layout of white-noise clips: ``classes`` x ``per_fold`` clips in each of the 5 folds."""
    rng = np.random.default_rng(seed)

    def noise():
        level = 10 ** rng.uniform(-2, -0.5)
        return (level * rng.standard_normal(int(seconds * sample_rate))).clip(-1, 1)

    return write_dataset(root, ((fold, target, f"class_{target}", noise()) for fold in range(1, FOLDS + 1)
                                for target in range(classes) for _ in range(per_fold)), sample_rate)


def stage_speeds(epochs: list, clips_per_epoch: int) -> list:
    """Per stage of a run's ``metrics.json`` epochs: epoch count, median epoch seconds, clips per second."""
    stages = []
    for stage in dict.fromkeys(row["stage"] for row in epochs):
        seconds = [row["seconds"] for row in epochs if row["stage"] == stage]
        median = statistics.median(seconds)
        stages.append({"stage": stage, "epochs": len(seconds), "median_epoch_s": round(median, 3),
                       "clips_per_s": round(clips_per_epoch / median, 1)})
    return stages


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", choices=sorted(RECIPES))
    parser.add_argument("--data", help="ESC-50 folder (default: a synthetic one of the real size)")
    parser.add_argument("--classes", type=int, default=50, help="synthetic classes (tests use fewer)")
    parser.add_argument("--per-fold", type=int, default=8, help="synthetic clips per class and fold")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--workers", type=int, default=4, help="DataLoader worker processes")
    parser.add_argument("--out", help="JSON path (default benchmarks/results/training-<model>-<cpu|cuda>.json)")
    argv = sys.argv[1:] if argv is None else list(argv)
    extra = []
    if "--" in argv:
        argv, extra = argv[:argv.index("--")], argv[argv.index("--") + 1:]
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data) if args.data else synthetic_esc50(Path(tmp) / "ESC-50", args.classes, args.per_fold)
        runs = Path(tmp) / "runs"
        recipe_args = ["--device", args.device, "--split", "book", "--workers", str(args.workers),
                       "--seed", "0", "--no-progress"]
        if args.model == "resnet" and "--weights" not in extra:
            recipe_args += ["--weights", "none"]
        recipe_args += extra
        status = RECIPES[args.model](["--data", str(data), "--out", str(runs)] + recipe_args)
        if status:
            return status
        run_dir = next(p for p in runs.iterdir() if (p / "metrics.json").is_file())
        metrics = json.loads((run_dir / "metrics.json").read_text())
        clips = read_clips(data)

    split = parse_splits("book")[0]
    epoch_clips = sum(c.fold in split.train_folds + split.valid_folds for c in clips)
    result = {
        "model": metrics["model"], "device": metrics["hardware"]["gpu"] or metrics["hardware"]["cpu"],
        "hardware": metrics["hardware"], "torch": torch.__version__,
        "precision": metrics["precision"],
        "data": (str(args.data) if args.data
                 else f"synthetic: {args.classes} classes x {args.per_fold} clips x {FOLDS} folds"),
        "recipe_args": recipe_args,
        "clips_per_epoch": epoch_clips, "wall_time_s": round(metrics["wall_time_s"], 1),
        "stages": stage_speeds(metrics["epochs"], epoch_clips),
        "test_accuracy": metrics["test_accuracy"] if args.data else None,
        "training_processes": training_processes(),
    }
    out = Path(args.out or REPO / "benchmarks" / "results" / f"training-{args.model}-{metrics['device']}.json")
    write_json(result, out)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
