"""Accuracy of exported models, alone and as an ensemble, on ESC-50 folds, classified as the edge does.

    python -m export.evaluate edge/models/melcnn-int8.onnx edge/models/audionet-int8.onnx \\
        --data data/ESC-50 --folds 4,5 --out results/ensemble.json

Every clip's 5-s window goes through edge.classifier.Classifier, the listener's own code; the ensemble
averages the models' probabilities. Choose on fold 4 (the validation fold of the book split) and only
report fold 5, where the models are tested.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from edge.atomic import write_json
from edge.audio import AudioFileError, load_audio
from edge.classifier import Classifier, ModelFileError, shared_inputs
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


def evaluate(model_paths: list, data, folds: list) -> dict:
    """{"models": [...], "folds": {fold: {"clips", "accuracy" per model, "ensemble"}}}."""
    classifiers = [Classifier(path) for path in model_paths]
    names = [str(path) for path in model_paths]
    if any(c.classes != classifiers[0].classes for c in classifiers):
        raise ModelMetadataError(f"{', '.join(names)}: the models name different classes; they cannot be averaged")
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
    return result


def fold_list(text: str) -> list:
    try:
        folds = [int(f) for f in text.split(",")]
    except ValueError:
        folds = []
    if not folds or not all(1 <= f <= 5 for f in folds):
        raise argparse.ArgumentTypeError(f"{text!r}: expected fold numbers 1-5 separated by commas, e.g. 4,5")
    return folds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", type=Path, help="exported ONNX files (python -m export.to_onnx)")
    p.add_argument("--data", required=True, help="ESC-50 folder (meta/esc50.csv + audio/)")
    p.add_argument("--folds", type=fold_list, default=[4], help="comma-separated folds (default 4: choose there)")
    p.add_argument("--out", type=Path, help="also write the result to this JSON file")
    args = p.parse_args(argv)
    try:
        result = evaluate(args.models, args.data, args.folds)
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
