"""Does the moving average of the weights (``--ema``) beat the raw weights it averages?

The average never feeds back into training, so a run's ``last.pt`` holds both after the very same
steps: a paired comparison at the final epoch, the epoch that cv splits report. Per run and fold, the
accuracy and the mean cross-entropy of each (choose on fold 4):

    python -m train.weight_average runs/melcnn-book-seed0-... [RUN...] --folds 4,5 --out results/melcnn-ema.json
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from edge.atomic import write_json
from train.models import model_from_checkpoint
from train.rescore import FoldImages, build_parser, mean_accuracy, probabilities, scores
from train.runs import training_folds


def final_weights(run: Path) -> dict:
    """{"raw": state dict, "ema": state dict} of a run's last epoch, from ``RUN/last.pt``."""
    path = run / "last.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no last.pt here (the engine writes it after every epoch)")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("ema") is None:
        raise ValueError(f"{path}: trained without --ema, so there is no average to compare")
    return {"raw": state["model"], "ema": state["ema"]["state_dict"]}


def main(argv=None) -> int:
    args = build_parser("python -m train.weight_average", __doc__.split("\n\n")[0],
                        "finished log-mel run folders trained with --ema (last.pt, best.pt, metrics.json)",
                        many_runs=True).parse_args(argv)
    folds = args.folds
    try:
        training_folds(args.runs, folds)
    except (FileNotFoundError, ValueError) as err:  # not a finished run, or one trained on a scored fold
        print(f"error: {err}", file=sys.stderr)
        return 2
    fold_images, results = FoldImages(args.data, folds, args.cache_dir), {}
    for run in args.runs:
        try:
            weights = final_weights(run)
            checkpoint, images_of = fold_images.of(run)
        except (FileNotFoundError, ValueError) as err:  # no last.pt, trained without --ema, or not a log-mel run
            print(f"error: {err}", file=sys.stderr)
            return 2
        model = model_from_checkpoint(checkpoint)
        results[run.name] = {}
        for fold, (images, targets) in images_of.items():
            results[run.name][f"fold {fold}"] = {}
            for name, state in weights.items():
                model.load_state_dict(state)
                results[run.name][f"fold {fold}"][name] = scores(probabilities(model, images), targets)
            print(run.name, fold, results[run.name][f"fold {fold}"], flush=True)
    write_json({"what": "final-epoch weights of each run: raw, and their moving average (EMA)",
                "command": "python -m train.weight_average " + " ".join(argv or sys.argv[1:]),
                "runs": results, "mean_accuracy": mean_accuracy(results, folds, ("raw", "ema"))}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
