"""Every recipe end to end, as a user runs it: train -> export to ONNX -> classify a file on the edge.

On the synthetic tone dataset always; on real ESC-50 clips when ESC50_DIR points at a dataset (CI uses a
250-clip subset built from ../shared). Each step is the command-line entry point the README documents.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from train.data.esc50 import read_clips

REPO = Path(__file__).resolve().parents[1]


def run_module(module, *args, cwd=REPO):
    """``python -m module args`` in a subprocess; returns stdout, failing the test with stderr otherwise."""
    result = subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=cwd, capture_output=True,
                            text=True, timeout=1800)
    assert result.returncode == 0, f"{module} {args} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result.stdout


def train_export_listen(train_module, dataset, tmp_path, train_args, clips, export_args=()):
    """Train one run, export it (fp32 + int8), classify ``clips`` with each file; returns (run, JSON lines)."""
    runs = tmp_path / "runs"
    run_module(train_module, "--data", dataset, "--out", runs, "--device", "cpu", "--no-progress", *train_args)
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["commit"]
    run_module("export.to_onnx", run, "--int8", "--data", dataset, "--latency-repeats", "2", "--threads", "1",
               *export_args)
    outputs = {}
    for model in (run / "model.onnx", run / "model.int8.onnx"):
        assert model.is_file(), model
        lines = run_module("edge.listen", "--model", model, "--json", "--threshold", "0", "--gate-db", "0",
                           "--file", *clips).splitlines()
        outputs[model.name] = [json.loads(line) for line in lines if line.startswith("{")]
    return metrics, outputs


def labels_of(results):
    """Top-1 label of every window."""
    return [r["top"][0]["label"] for r in results if r.get("top")]


# Trained on folds 1-4 for a fixed number of epochs (no EMA: it would still hold the first steps' weights),
# AudioNet and MelCNN separate the tones of fold 5, so their int8 files must pass the default int8 gate and
# the edge must name every clip. ResNet-50 from scratch cannot learn in a smoke test's two epochs: it only
# has to run through every step, so its int8 gate is off.
RECIPES = [
    ("train.audionet", ["--epochs", "40", "--batch-size", "4", "--depth", "5", "--ema", "0", "--split", "cv5"], ()),
    ("train.melcnn", ["--epochs", "40", "--batch-size", "4", "--widths", "4,8,16,32", "--ema", "0", "--split", "cv5"],
     ()),
    ("train.resnet", ["--weights", "none", "--head-epochs", "1", "--epochs", "1", "--batch-size", "4"],
     ("--max-int8-drop", "100")),
]


@pytest.mark.slow
@pytest.mark.parametrize("train_module, train_args, export_args", RECIPES)
def test_recipe_on_synthetic_tones(fake_esc50, tmp_path, train_module, train_args, export_args):
    test_clips = [c for c in read_clips(fake_esc50) if c.fold == 5]
    metrics, outputs = train_export_listen(train_module, fake_esc50, tmp_path, train_args,
                                           [c.path for c in test_clips], export_args)
    expected_mix = {"train.audionet": "BetweenClass(sample_rate=16000)", "train.melcnn": "Mixup(alpha=1.0)"}
    assert metrics["mix"] == expected_mix.get(train_module, "None")
    for name, results in outputs.items():
        labels = labels_of(results)
        assert len(labels) == len(test_clips) and set(labels) <= set(metrics["per_class_accuracy"]), (name, labels)
        if not export_args:  # a recipe that learns: every clip gets its own class, in fp32 and int8
            assert metrics["test_accuracy"] == 1.0
            assert labels == [c.category for c in test_clips], name


@pytest.mark.realdata
@pytest.mark.slow
def test_audionet_recipe_on_real_clips(tmp_path):
    dataset = os.environ.get("ESC50_DIR")
    if not dataset:
        pytest.skip("set ESC50_DIR to an ESC-50 folder (CI builds a subset from ../shared)")
    run_module("train.data", "check", dataset, "--subset")
    clips = [c.path for c in read_clips(dataset) if c.fold == 5][:3]
    metrics, outputs = train_export_listen("train.audionet", dataset, tmp_path, ["--epochs", "1", "--depth", "5"],
                                           clips, ("--max-int8-drop", "100"))  # one epoch: int8 drop means nothing
    classes = set(metrics["per_class_accuracy"])
    for name, results in outputs.items():
        assert set(labels_of(results)) <= classes and len(labels_of(results)) >= len(clips), name
