"""Does averaging the predictions of several crops beat classifying the whole 5-s window?

EnvNet-v2 and ACDNet test on crops of their training length and average them; MelCNN is fully
convolutional, so it can also take the whole window at once, as the edge does. This compares both on a
trained log-mel run's checkpoint, per fold (choose on fold 4):

    python -m train.crop_averaging runs/melcnn-book-seed0-... --folds 4,5 --out results/melcnn-crop-averaging.json
"""
from __future__ import annotations

import sys

import numpy as np
import torch

from edge.atomic import write_json
from edge.frontend import FrontEnd
from train.models import model_from_checkpoint
from train.rescore import FoldImages, build_parser, probabilities, scores
from train.runs import training_folds

# (crop length in seconds, crops per window): 2.5 s (the recipe's training crops) and 3.5 s, evenly spaced.
VARIANTS = ((2.5, 3), (2.5, 5), (3.5, 3))


def crop_average(model, images: torch.Tensor, frames: int, crops: int) -> torch.Tensor:
    """Mean class probabilities of ``crops`` evenly spaced crops of ``frames`` frames of each image."""
    starts = np.linspace(0, images.shape[-1] - frames, crops).round().astype(int)
    return torch.stack([probabilities(model, images[..., s:s + frames]) for s in starts]).mean(0)


def compare(model, images: torch.Tensor, targets: np.ndarray, frames_per_second: float) -> dict:
    """Accuracy of the whole window, of each crop average, and of each averaged with the whole window."""
    def accuracy(p):
        return scores(p, targets)["accuracy"]

    whole = probabilities(model, images)
    result = {"whole window": accuracy(whole)}
    for seconds, crops in VARIANTS:
        frames = round(seconds * frames_per_second)
        averaged = crop_average(model, images, frames, crops)
        result[f"{crops} crops of {frames} frames"] = accuracy(averaged)
        result[f"{crops} crops of {frames} frames + whole window"] = accuracy((averaged + whole) / 2)
    return result


def main(argv=None) -> int:
    args = build_parser("python -m train.crop_averaging", __doc__.split("\n\n")[0],
                        "a finished log-mel run folder (best.pt, metrics.json)").parse_args(argv)
    run, scored_folds = args.runs[0], args.folds
    try:
        training_folds([run], scored_folds)
        checkpoint, folds = FoldImages(args.data, scored_folds, args.cache_dir).of(run)
    except (FileNotFoundError, ValueError) as err:  # not finished, trained on a scored fold, or not log-mel
        print(f"error: {err}", file=sys.stderr)
        return 2
    model = model_from_checkpoint(checkpoint)
    frontend = FrontEnd.from_json(checkpoint["input"]["frontend"])
    results = {}
    for fold, (images, targets) in folds.items():
        results[f"fold {fold}"] = compare(model, images, targets, frontend.sample_rate / frontend.hop_length)
        print(fold, results[f"fold {fold}"], flush=True)
    write_json({"run": run.name, "command": "python -m train.crop_averaging " + " ".join(argv or sys.argv[1:]),
                "frames_per_window": int(next(iter(folds.values()))[0].shape[-1]), "accuracy": results}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
