"""Ensembles of trained runs: average their class probabilities on a shared test fold (book, "Further
experimentation": combine the waveform and the spectrogram model)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from edge.frontend import FrontEnd
from edge.metadata import LOG_MEL_IMAGE, WAVEFORM
from train.data.esc50 import parse_splits, read_clips
from train.engine import TEST_PROBABILITIES, load_best, resolve_device
from train.models import model_from_checkpoint
from train.runs import run_split, training_folds


def fold_set(checkpoint: dict, data_dir, fold: int, log_mels=None):
    """The clips of ``fold`` as the checkpoint's model expects them (waveforms or log-mel images).

    ``log_mels`` (the cached array in read_clips() order) avoids loading the cache again.
    """
    from train.datasets import LogMelImages, WaveformClips

    clips = read_clips(data_dir)
    index = [i for i, c in enumerate(clips) if c.fold == fold]
    spec = checkpoint["input"]
    if spec["kind"] == WAVEFORM:
        return WaveformClips([clips[i] for i in index], sample_rate=spec["sample_rate"])
    if spec["kind"] == LOG_MEL_IMAGE:
        frontend = FrontEnd.from_json(spec["frontend"])
        if log_mels is None:
            from train.data.cache import load_log_mels

            log_mels, _ = load_log_mels(data_dir, frontend)
        return LogMelImages(log_mels[index], [clips[i].target for i in index], frontend)
    raise ValueError(f"unknown input kind {spec['kind']!r}")


@torch.no_grad()
def probabilities(run_dir, data_dir, device="auto", batch_size: int = 32, log_mels=None,
                  fold: int | None = None) -> tuple:
    """(softmax probabilities (N, classes), targets (N,), classes) of a run's best.pt on ``fold`` (default: its test
    fold). On its test fold, the probabilities the run saved when it was tested, if it has them: what its
    metrics.json reports, and all a results folder without weights keeps."""
    test_fold = parse_splits(run_split(run_dir))[0].test_fold
    fold = test_fold if fold is None else fold
    saved = Path(run_dir) / TEST_PROBABILITIES
    if fold == test_fold and saved.is_file():
        data = json.loads(saved.read_text())
        return np.asarray(data["probabilities"], dtype=np.float32), np.asarray(data["targets"]), data["classes"]
    device = resolve_device(device)
    checkpoint = load_best(run_dir)
    model = model_from_checkpoint(checkpoint).to(device)
    dataset = fold_set(checkpoint, data_dir, fold, log_mels)
    probs, targets = [], []
    for x, y in torch.utils.data.DataLoader(dataset, batch_size=batch_size):
        probs.append(model(x.to(device)).float().softmax(1).cpu())
        targets.append(y)
    return torch.cat(probs).numpy(), torch.cat(targets).numpy(), checkpoint["classes"]


def ensemble_accuracy(run_dirs, data_dir, device="auto", log_mels=None, fold: int | None = None) -> dict:
    """Accuracy of each run and of their averaged probabilities on ``fold``: by default the test fold they share;
    another fold (e.g. the book split's selection fold 4) only if none of them trained on it."""
    splits = {str(run): run_split(run) for run in run_dirs}
    if fold is None:
        folds = {parse_splits(s)[0].test_fold for s in splits.values()}
        if len(folds) != 1:
            raise ValueError(f"runs tested on different folds cannot be ensembled: {splits}")
        fold = folds.pop()
    training_folds(run_dirs, [fold])
    outputs = [probabilities(run, data_dir, device, log_mels=log_mels, fold=fold) for run in run_dirs]
    targets, classes = outputs[0][1], outputs[0][2]
    for run, (_, other_targets, other_classes) in zip(run_dirs, outputs):
        if other_classes != classes or not np.array_equal(other_targets, targets):
            raise ValueError(f"{run}: different classes or test clips than {run_dirs[0]}")
    accuracy = {str(run): float((p.argmax(1) == targets).mean()) for run, (p, _, _) in zip(run_dirs, outputs)}
    mean = np.mean([p for p, _, _ in outputs], axis=0)
    return {"fold": fold, "runs": accuracy, "ensemble": float((mean.argmax(1) == targets).mean()),
            "test_clips": len(targets)}


def main(argv=None) -> int:
    """``python -m train.ensemble RUN RUN... [--data DIR] [--out FILE]``: ensemble finished runs."""
    import argparse
    import os
    import sys

    from edge.atomic import write_json

    parser = argparse.ArgumentParser(prog="python -m train.ensemble", description=main.__doc__)
    parser.add_argument("runs", nargs="+", help="finished run folders tested on the same fold")
    parser.add_argument("--data", default=os.environ.get("ESC50_DIR", "data/ESC-50"), help="ESC-50 folder")
    parser.add_argument("--fold", type=int, help="evaluate on this fold (default: the runs' test fold); none of "
                                                  "the runs may have trained on it")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--out", help="write the result as JSON here too")
    args = parser.parse_args(argv)
    try:
        result = ensemble_accuracy(args.runs, args.data, args.device, fold=args.fold)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    if args.out:
        write_json(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
