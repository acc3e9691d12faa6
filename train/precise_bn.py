"""Do BatchNorm statistics recomputed on whole training windows beat the ones a run kept?

The engine keeps a moving average of each BatchNorm's batch statistics as training saw them (the recipe's:
2.5-s crops, mixed, masked, a third of them in simulated rooms). The test and the edge feed whole clean 5-s
windows. Precise BN (Wu & Johnson 2021) recomputes the statistics with the final weights in one pass over the
training clips as they are tested. Per run and fold: the statistics as trained, recomputed on whole training
windows, and recomputed on crops of them as long as the runs' training crops (which tells the window's length
from its cleanliness); with several runs also their averaged probabilities each way, as the edge averages seeds
(choose on fold 4):

    python -m train.precise_bn RUN [RUN...] --folds 4 --out results/melcnn-precise-bn-fold4.json
"""
from __future__ import annotations

import copy
import sys

import torch
from torch import nn

from edge.atomic import write_json
from edge.frontend import FrontEnd
from train.melcnn import RandomTimeCrop
from train.models import model_from_checkpoint
from train.rescore import FoldImages, build_parser, mean_accuracy, probabilities, scores
from train.runs import run_metrics, training_folds


def training_crop_seconds(runs) -> float:
    """The length of the training crops the runs share (their settings); ValueError naming a run that trained on
    whole clips, where the crops would be the whole windows, or on crops of another length than the first run's."""
    lengths = {run: run_metrics(run).get("settings", {}).get("crop_seconds") for run in runs}
    first, seconds = next(iter(lengths.items()))
    for run, length in lengths.items():
        if not length:
            raise ValueError(f"{run}: trained on whole clips (or its metrics.json has no crop_seconds setting): no "
                             "crops to recompute on")
        if length != seconds:
            raise ValueError(f"{run}: trained on {length:g}-s crops, {first} on {seconds:g}-s ones; "
                             "recompute runs of one crop length together")
    return seconds


def recompute_batchnorm(model: nn.Module, images: torch.Tensor, batch: int = 32, seed: int = 0) -> nn.Module:
    """A copy of ``model`` whose BatchNorm statistics are the plain means over ``images`` in shuffled batches of
    ``batch`` (full batches only, as in training; all of them in one when there are fewer), everything else in
    eval mode."""
    model = copy.deepcopy(model).eval()
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        raise ValueError("the model has no BatchNorm layers to recompute")
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average of the batches, not a moving one
        norm.train()
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for start in range(0, max(len(order) - batch, 0) + 1, batch):
            model(images[order[start:start + batch]])
    return model.eval()


def crops(images: torch.Tensor, frontend, seconds: float, seed: int = 0) -> torch.Tensor:
    """One random crop of ``seconds``, holding the sound, of each image (train.melcnn.RandomTimeCrop)."""
    crop = RandomTimeCrop(round(seconds * frontend.sample_rate / frontend.hop_length), frontend)
    torch.manual_seed(seed)
    return torch.stack([crop(image) for image in images])


def main(argv=None) -> int:
    args = build_parser("python -m train.precise_bn", __doc__.split("\n\n")[0],
                        "finished log-mel run folders (best.pt, metrics.json)", many_runs=True).parse_args(argv)
    folds = args.folds
    try:
        train_folds = training_folds(args.runs, folds)
        crop_seconds = training_crop_seconds(args.runs)
    except (FileNotFoundError, ValueError) as err:  # unfinished, trained on a scored fold, no crops or several
        print(f"error: {err}", file=sys.stderr)
        return 2
    # one pass per run makes the images of the folds scored and of the folds its statistics are recomputed on
    fold_images = FoldImages(args.data, sorted(set(folds).union(*train_folds.values())), args.cache_dir)
    names = ("as trained", "whole windows", f"{crop_seconds:g}-s crops")
    results, probs, targets = {}, {}, {}
    for run in args.runs:
        try:
            checkpoint, images_of = fold_images.of(run)
        except ValueError as err:  # not a log-mel run
            print(f"error: {err}", file=sys.stderr)
            return 2
        train_images = torch.cat([images_of[fold][0] for fold in train_folds[run]])
        model = model_from_checkpoint(checkpoint)
        frontend = FrontEnd.from_json(checkpoint["input"]["frontend"])
        models = dict(zip(names, (model, recompute_batchnorm(model, train_images),
                                  recompute_batchnorm(model, crops(train_images, frontend, crop_seconds)))))
        results[run.name] = {}
        for fold in folds:
            images, targets[fold] = images_of[fold]
            for variant, variant_model in models.items():
                probs.setdefault(fold, {}).setdefault(variant, []).append(probabilities(variant_model, images))
            results[run.name][f"fold {fold}"] = {variant: scores(probs[fold][variant][-1], targets[fold])
                                                 for variant in names}
            print(run.name, fold, results[run.name][f"fold {fold}"], flush=True)
    summary = {"what": "BatchNorm statistics of each run as trained and recomputed on its training folds (whole "
                       f"5-s windows; {crop_seconds:g}-s crops, as the runs trained on)",
               "command": "python -m train.precise_bn " + " ".join(argv or sys.argv[1:]), "runs": results,
               "mean_accuracy": mean_accuracy(results, folds, names)}
    if len(args.runs) > 1:
        summary["runs averaged"] = {f"fold {fold}": {v: scores(torch.stack(probs[fold][v]).mean(0), targets[fold])
                                                     for v in names} for fold in folds}
    write_json(summary, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
