"""Run bookkeeping (train/runs.py, train/config.py): plans, summaries, and the typed configuration's flags."""
import argparse
import json

import pytest

from train.config import TrainingConfig, add_common_args, seeds_arg
from train.runs import main as summarize_main
from train.runs import plan_runs


def write_metrics(folder, seed: int, valid: float, test: float):
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps(
        {"split": "book", "seed": seed, "valid_accuracy": valid, "test_accuracy": test}))
    return folder


def test_summary_of_runs_trained_apart_has_mean_and_sample_std_of_both_folds(tmp_path, capsys):
    runs = [write_metrics(tmp_path / f"seed{k}", k, v, t) for k, (v, t) in enumerate([(0.8, 0.7), (0.9, 0.8)])]
    out = tmp_path / "summary.json"
    assert summarize_main([*map(str, runs), "--out", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert [r["seed"] for r in summary["runs"]] == [0, 1]
    assert summary["mean_valid_accuracy"] == pytest.approx(0.85)
    assert summary["mean_test_accuracy"] == pytest.approx(0.75)
    assert summary["std_test_accuracy"] == pytest.approx(0.1 / 2 ** 0.5)  # ddof=1: 0.0707, not 0.05
    assert summarize_main([str(runs[0]), str(tmp_path / "unfinished"), "--out", str(out)]) == 2
    assert "unfinished" in capsys.readouterr().err


def test_one_planned_run_per_seed_and_fold_each_saving_its_own_seed_and_split(tmp_path):
    config = TrainingConfig(split="cv", seeds=(3, 4), out=str(tmp_path))
    plan = plan_runs(config, "net")
    assert [(run.split.name, run.seed) for run in plan] == [(f"cv{k}", s) for s in (3, 4) for k in range(1, 6)]
    assert all(run.config["seed"] == run.seed and run.config["split"] == run.split.name for run in plan)
    assert all(run.config["seeds"] is None and not run.resume for run in plan)
    assert config.seeds == (3, 4)  # planning does not edit the configuration


def test_the_flags_take_their_defaults_from_the_configuration():
    parser = add_common_args(argparse.ArgumentParser(), TrainingConfig(epochs=7, mix="mixup", ema=0.5))
    config = TrainingConfig.from_args(parser.parse_args(["--seeds", "0,2"]))
    assert (config.epochs, config.mix, config.ema, config.run_seeds) == (7, "mixup", 0.5, (0, 2))
    with pytest.raises(argparse.ArgumentTypeError):
        seeds_arg("0,x")
