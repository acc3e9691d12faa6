"""Does the moving average of the weights (``--ema``) beat the raw weights it averages?

The average never feeds back into training, so a run's ``last.pt`` holds both after the very same
steps: a paired comparison at the final epoch, the epoch that cv splits report. Per run and fold, the
accuracy and the mean cross-entropy of each (choose on fold 4):

    python -m train.weight_average runs/melcnn-book-seed0-... [RUN...] --folds 4,5 --out results/melcnn-ema.json
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
from train.crop_averaging import probabilities
from train.data.cache import load_log_mels
from train.engine import load_best
from train.ensemble import fold_set
from train.models import model_from_checkpoint


def final_weights(run: Path) -> dict:
    """{"raw": state dict, "ema": state dict} of a run's last epoch, from ``RUN/last.pt``."""
    path = run / "last.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no last.pt here (the engine writes it after every epoch)")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("ema") is None:
        raise ValueError(f"{path}: trained without --ema, so there is no average to compare")
    return {"raw": state["model"], "ema": state["ema"]["state_dict"]}


def scores(probs: torch.Tensor, targets: np.ndarray) -> dict:
    """Accuracy and mean cross-entropy of class probabilities against integer targets."""
    picked = probs[torch.arange(len(targets)), torch.as_tensor(targets)]
    return {"accuracy": float((probs.argmax(-1).numpy() == targets).mean()),
            "cross_entropy": float(-picked.clamp_min(1e-12).log().mean())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.weight_average", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="log-mel run folders trained with --ema (last.pt, best.pt)")
    parser.add_argument("--data", default="data/ESC-50", help="ESC-50 folder (default %(default)s)")
    parser.add_argument("--folds", default="4", help="comma-separated folds to evaluate (default 4)")
    parser.add_argument("--cache-dir", help="log-mel cache folder (default <dataset>/cache)")
    parser.add_argument("--out", type=Path, required=True, help="JSON to write")
    args = parser.parse_args(argv)
    folds = [int(f) for f in args.folds.split(",")]
    results, log_mels = {}, {}
    for run in args.runs:
        checkpoint = load_best(run)
        if checkpoint["input"]["kind"] != LOG_MEL_IMAGE:
            print(f"error: {run}: not a log-mel model", file=sys.stderr)
            return 2
        frontend = FrontEnd.from_json(checkpoint["input"]["frontend"])
        key = frontend.digest()
        if key not in log_mels:
            log_mels[key] = load_log_mels(args.data, frontend, args.cache_dir, progress=False)[0]
        model = model_from_checkpoint(checkpoint)
        weights = final_weights(run)
        datasets = {fold: fold_set(checkpoint, args.data, fold, log_mels[key]) for fold in folds}
        results[run.name] = {}
        for fold, dataset in datasets.items():
            images = torch.stack([image for image, _ in dataset])
            results[run.name][f"fold {fold}"] = {}
            for name, state in weights.items():
                model.load_state_dict(state)
                results[run.name][f"fold {fold}"][name] = scores(probabilities(model, images), dataset.targets.numpy())
            print(run.name, fold, results[run.name][f"fold {fold}"], flush=True)
    means = {f"fold {fold}": {name: float(np.mean([r[f"fold {fold}"][name]["accuracy"] for r in results.values()]))
                              for name in ("raw", "ema")} for fold in folds}
    write_json({"what": "final-epoch weights of each run: raw, and their moving average (EMA)",
                "command": "python -m train.weight_average " + " ".join(argv or sys.argv[1:]),
                "runs": results, "mean_accuracy": means}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
