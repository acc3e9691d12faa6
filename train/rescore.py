"""What the tools that re-score a trained log-mel run on whole folds share (train.crop_averaging,
train.weight_average, train.precise_bn): their command line, the fold images a run's front end makes, and the
scores. Each refuses a fold a run trained on with train.runs.training_folds."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch

from edge.frontend import FrontEnd
from edge.metadata import LOG_MEL_IMAGE
from train.config import int_list
from train.data.cache import load_log_mels
from train.engine import load_best
from train.ensemble import fold_set


def build_parser(prog: str, description: str, runs_help: str, many_runs: bool = False) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("runs", nargs="+" if many_runs else 1, type=Path, metavar="RUN", help=runs_help)
    parser.add_argument("--data", default=os.environ.get("ESC50_DIR", "data/ESC-50"),
                        help="ESC-50 folder (default: $ESC50_DIR or data/ESC-50)")
    parser.add_argument("--folds", type=folds_arg, default=(4,), help="comma-separated folds to evaluate (default 4)")
    parser.add_argument("--cache-dir", help="log-mel cache folder (default <dataset>/cache)")
    parser.add_argument("--out", type=Path, required=True, help="JSON to write")
    return parser


class FoldImages:
    """Each fold's (images, targets) as a run's front end makes them; each log-mel cache is read once however
    many runs share it."""

    def __init__(self, data, folds: list, cache_dir=None):
        self.data, self.folds, self.cache_dir = data, list(folds), cache_dir
        self._log_mels = {}

    def of(self, run: Path) -> tuple:
        """(the run's best checkpoint, {fold: (images (N, C, mels, frames), targets (N,))}); ValueError for a run
        whose model does not take log-mel images."""
        checkpoint = load_best(run)
        if checkpoint["input"]["kind"] != LOG_MEL_IMAGE:
            raise ValueError(f"{run}: not a log-mel model (input {checkpoint['input']['kind']!r})")
        frontend = FrontEnd.from_json(checkpoint["input"]["frontend"])
        key = frontend.log_mel_digest()  # runs whose images differ but whose log-mels agree share them
        if key not in self._log_mels:
            self._log_mels[key] = load_log_mels(self.data, frontend, self.cache_dir, progress=False)[0]
        folds = {}
        for fold in self.folds:
            dataset = fold_set(checkpoint, self.data, fold, self._log_mels[key])
            folds[fold] = torch.stack([image for image, _ in dataset]), dataset.targets.numpy()
        return checkpoint, folds


def folds_arg(text: str) -> tuple:
    return int_list(text, "ESC-50 folds (1-5)", low=1, high=5)


def probabilities(model, images: torch.Tensor, batch: int = 50) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(images[i:i + batch]).softmax(-1) for i in range(0, len(images), batch)])


def mean_accuracy(results: dict, folds: list, variants) -> dict:
    """{"fold F": {variant: mean accuracy over the runs}} of ``results`` = {run: {"fold F": {variant: scores}}}."""
    return {f"fold {fold}": {v: float(np.mean([r[f"fold {fold}"][v]["accuracy"] for r in results.values()]))
                             for v in variants} for fold in folds}


def scores(probs: torch.Tensor, targets: np.ndarray) -> dict:
    """Accuracy and mean cross-entropy of class probabilities against integer targets."""
    picked = probs[torch.arange(len(targets)), torch.as_tensor(targets)]
    return {"accuracy": float((probs.argmax(-1).numpy() == targets).mean()),
            "cross_entropy": float(-picked.clamp_min(1e-12).log().mean())}
