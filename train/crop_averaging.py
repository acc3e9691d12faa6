"""Does averaging the predictions of several crops beat classifying the whole 5-s window?

EnvNet-v2 and ACDNet test on crops of their training length and average them; MelCNN is fully
convolutional, so it can also take the whole window at once, as the edge does. This compares both on a
trained log-mel run's checkpoint, per fold (choose on fold 4):

    python -m train.crop_averaging runs/melcnn-book-seed0-... --folds 4,5 --out results/melcnn-crop-averaging.json
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from edge.atomic import write_json
from edge.frontend import FrontEnd
from edge.metadata import LOG_MEL_IMAGE
from train.data.cache import load_log_mels
from train.engine import load_best
from train.ensemble import fold_set
from train.models import model_from_checkpoint

# (crop length in frames, crops per window): 2.5 s (the training crops) and 3.5 s, evenly spaced.
VARIANTS = ((108, 3), (108, 5), (151, 3))


def probabilities(model, images: torch.Tensor, batch: int = 50) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(images[i:i + batch]).softmax(-1) for i in range(0, len(images), batch)])


def crop_average(model, images: torch.Tensor, frames: int, crops: int) -> torch.Tensor:
    """Mean class probabilities of ``crops`` evenly spaced crops of ``frames`` frames of each image."""
    starts = np.linspace(0, images.shape[-1] - frames, crops).round().astype(int)
    return torch.stack([probabilities(model, images[..., s:s + frames]) for s in starts]).mean(0)


def compare(model, images: torch.Tensor, targets: np.ndarray) -> dict:
    """Accuracy of the whole window, of each crop average, and of each averaged with the whole window."""
    def accuracy(p):
        return float((p.argmax(-1).numpy() == targets).mean())

    whole = probabilities(model, images)
    result = {"whole window": accuracy(whole)}
    for frames, crops in VARIANTS:
        averaged = crop_average(model, images, frames, crops)
        result[f"{crops} crops of {frames} frames"] = accuracy(averaged)
        result[f"{crops} crops of {frames} frames + whole window"] = accuracy((averaged + whole) / 2)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.crop_averaging", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a log-mel run folder (best.pt)")
    parser.add_argument("--data", default="data/ESC-50", help="ESC-50 folder (default %(default)s)")
    parser.add_argument("--folds", default="4", help="comma-separated folds to evaluate (default 4)")
    parser.add_argument("--cache-dir", help="log-mel cache folder (default <dataset>/cache)")
    parser.add_argument("--out", type=Path, required=True, help="JSON to write")
    args = parser.parse_args(argv)
    checkpoint = load_best(args.run)
    if checkpoint["input"]["kind"] != LOG_MEL_IMAGE:
        print(f"error: {args.run}: not a log-mel model", file=sys.stderr)
        return 2
    frontend = FrontEnd.from_json(checkpoint["input"]["frontend"])
    model = model_from_checkpoint(checkpoint)
    log_mels, _ = load_log_mels(args.data, frontend, args.cache_dir, progress=False)
    results = {}
    for fold in (int(f) for f in args.folds.split(",")):
        dataset = fold_set(checkpoint, args.data, fold, log_mels)
        images = torch.stack([image for image, _ in dataset])
        results[f"fold {fold}"] = compare(model, images, dataset.targets.numpy())
        print(fold, results[f"fold {fold}"], flush=True)
    write_json({"run": args.run.name, "command": "python -m train.crop_averaging " + " ".join(argv or sys.argv[1:]),
                "frames_per_window": int(frontend.image_shape[-1]), "accuracy": results}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
