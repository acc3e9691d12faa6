"""Accuracy of exported models, alone and as an ensemble, on ESC-50 folds, classified as the edge does.

    python -m export.evaluate edge/models/melcnn-int8.onnx edge/models/audionet-int8.onnx \\
        --data data/ESC-50 --folds 4,5 --out results/ensemble.json
    python -m export.evaluate seed0.onnx seed1.onnx seed2.onnx --data data/ESC-50 --combinations 2,3

Every clip's 5-s window goes through edge.classifier.Classifier, the listener's own code; the ensemble
averages the models' probabilities. Choose on fold 4 (the validation fold of the book split) and only
report fold 5, where the models are tested.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

from edge.atomic import write_json
from edge.audio import AudioFileError, load_audio
from edge.classifier import Classifier, ModelFileError, check_averageable, shared_inputs
from edge.metadata import ModelMetadataError
from train.data.esc50 import DatasetError, read_clips


def probabilities(classifiers: list, clips) -> np.ndarray:
    """(models, clips, classes) probabilities; every model sees the same waveform, and models built alike (seeds of
    one recipe) the same input, made once."""
    out = np.zeros((len(classifiers), len(clips), len(classifiers[0].classes)))
    for j, clip in enumerate(clips):
        wave, rate = load_audio(clip.path)
        for i, (classifier, x) in enumerate(zip(classifiers, shared_inputs(classifiers, wave, rate))):
            out[i, j] = classifier.infer(x)
    return out


def combination_accuracy(names: list, probs: np.ndarray, targets: np.ndarray, size: int) -> dict:
    """Accuracy of every ensemble of ``size`` of the models (their names joined by "+"), with the mean and the
    sample std over those ensembles: how a recipe's ensembles of that size fare, not one lucky draw."""
    scores = {"+".join(names[i] for i in chosen): float(np.mean(probs[list(chosen)].mean(0).argmax(1) == targets))
              for chosen in itertools.combinations(range(len(names)), size)}
    values = list(scores.values())
    return {"ensembles": scores, "mean": float(np.mean(values)),
            "std": float(np.std(values, ddof=1)) if len(values) > 1 else None}


def evaluate(model_paths: list, data, folds: list, sizes: tuple = ()) -> dict:
    """{"models": [...], "folds": {fold: {"clips", "accuracy" per model, "ensemble", "combinations"}}};
    "combinations" (only with ``sizes``) holds, per size, every ensemble of that many of the models."""
    classifiers = [Classifier(path) for path in model_paths]
    names = [str(path) for path in model_paths]
    check_averageable(classifiers)
    clips = read_clips(data)
    result = {"models": names, "method": "mean of the models' softmax probabilities, first 5-s window of each clip",
              "folds": {}}
    for fold in folds:
        chosen = [c for c in clips if c.fold == fold]
        if not chosen:
            raise DatasetError(f"{data}: no clips in fold {fold}")
        probs = probabilities(classifiers, chosen)
        targets = np.array([c.target for c in chosen])
        result["folds"][str(fold)] = {
            "clips": len(chosen),
            "accuracy": {name: float(np.mean(p.argmax(1) == targets)) for name, p in zip(names, probs)},
            "ensemble": float(np.mean(probs.mean(0).argmax(1) == targets)) if len(probs) > 1 else None,
        }
        if sizes:
            result["folds"][str(fold)]["combinations"] = {
                str(size): combination_accuracy(names, probs, targets, size) for size in sizes}
    return result


def numbers(text: str, lowest: int, highest: int, what: str) -> tuple:
    """Comma-separated integers in [lowest, highest], for --folds and --combinations."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or not all(lowest <= v <= highest for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: expected {what} separated by commas")
    return values


def fold_list(text: str) -> list:
    return list(numbers(text, 1, 5, "fold numbers 1-5, e.g. 4,5"))


def size_list(text: str) -> tuple:
    return numbers(text, 2, 99, "ensemble sizes of 2 or more, e.g. 2,3")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", type=Path, help="exported ONNX files (python -m export.to_onnx)")
    p.add_argument("--data", required=True, help="ESC-50 folder (meta/esc50.csv + audio/)")
    p.add_argument("--folds", type=fold_list, default=[4], help="comma-separated folds (default 4: choose there)")
    p.add_argument("--combinations", type=size_list, default=(), metavar="K[,K]",
                   help="also score every ensemble of K of the models, e.g. 2,3 for all pairs and trios")
    p.add_argument("--out", type=Path, help="also write the result to this JSON file")
    args = p.parse_args(argv)
    if any(size > len(args.models) for size in args.combinations):
        p.error(f"--combinations: at most {len(args.models)}, the number of models given")
    try:
        result = evaluate(args.models, args.data, args.folds, args.combinations)
    except (ModelFileError, ModelMetadataError, DatasetError, AudioFileError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    result["command"] = "python -m export.evaluate " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.out:
        write_json(result, args.out)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
