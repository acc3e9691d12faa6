"""Run bookkeeping (train/runs.py, train/config.py): plans, summaries, and the typed configuration's flags."""
import argparse
import dataclasses
import json
import runpy
import sys
import types

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


def test_cross_validation_over_seeds_reports_the_std_of_each_seeds_mean_over_the_folds(tmp_path):
    """Five folds x two seeds: the protocol's number is each seed's mean over its folds, then mean +- std over the
    seeds; the std over all ten runs would count how much harder one fold is than another as seed noise."""
    runs = []
    for seed, shift in ((0, 0.0), (1, 0.02)):
        for fold, accuracy in enumerate((0.85, 0.87, 0.85, 0.89, 0.83), start=1):
            folder = write_metrics(tmp_path / f"cv{fold}-seed{seed}", seed, None, accuracy + shift)
            metrics = json.loads((folder / "metrics.json").read_text())
            (folder / "metrics.json").write_text(json.dumps({**metrics, "split": f"cv{fold}"}))
            runs.append(folder)
    out = tmp_path / "cv.json"
    assert summarize_main([*map(str, runs), "--out", str(out)]) == 0
    cv = json.loads(out.read_text())["cross_validation"]
    assert cv["folds"] == 5 and cv["per_seed_mean_test_accuracy"] == pytest.approx({"0": 0.858, "1": 0.878})
    assert cv["mean_over_seeds"] == pytest.approx(0.868) and cv["std_over_seeds"] == pytest.approx(0.02 / 2 ** 0.5)
    assert summarize_main([*map(str, runs[:9]), "--out", str(out)]) == 0  # seed 1 lacks fold 5: no CV summary
    assert "cross_validation" not in json.loads(out.read_text())


def test_one_planned_run_per_seed_and_fold_each_saving_its_own_seed_and_split(tmp_path):
    config = TrainingConfig(split="cv", seeds=(3, 4), out=str(tmp_path))
    plan = plan_runs(config, "net")
    assert [(run.split.name, run.seed) for run in plan] == [(f"cv{k}", s) for s in (3, 4) for k in range(1, 6)]
    assert all(run.config["seed"] == run.seed and run.config["split"] == run.split.name for run in plan)
    assert all(run.config["seeds"] is None and not run.resume for run in plan)
    assert config.seeds == (3, 4)  # planning does not edit the configuration


def test_a_resumed_run_keeps_the_command_that_started_it_and_names_the_one_resuming_it(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["net.py", "--epochs", "3", "--seeds", "5"])
    [run] = plan_runs(TrainingConfig(epochs=3, seeds=(5,), out=str(tmp_path)), "net")
    run.create()
    assert run.command == "python -m train.net --epochs 3 --seeds 5" and run.resumed_with is None
    monkeypatch.setattr(sys, "argv", ["net.py", "--resume", str(run.run_dir)])
    config = TrainingConfig(resume=str(run.run_dir)).resumed()
    assert (config.epochs, config.seed) == (3, 5)  # the saved command is not a setting
    [resumed] = plan_runs(config, "net")
    assert resumed.command == run.command and resumed.resumed_with == f"python -m train.net --resume {run.run_dir}"
    saved = json.loads((run.run_dir / "config.json").read_text())
    del saved["command"]  # as saved before config.json recorded it
    (run.run_dir / "config.json").write_text(json.dumps(saved))
    assert plan_runs(config, "net")[0].command is None


def test_the_flags_take_their_defaults_from_the_configuration():
    parser = add_common_args(argparse.ArgumentParser(), TrainingConfig(epochs=7, mix="mixup", ema=0.5))
    config = TrainingConfig.from_args(parser.parse_args(["--seeds", "0,2"]))
    assert (config.epochs, config.mix, config.ema, config.run_seeds) == (7, "mixup", 0.5, (0, 2))
    with pytest.raises(argparse.ArgumentTypeError):
        seeds_arg("0,x")


@pytest.mark.parametrize("module, config_name", [("train.audionet", "AudioNetConfig"),
                                                 ("train.melcnn", "MelCNNConfig")])
# runpy warns that the module was imported before (by other tests): running it again is the point
@pytest.mark.filterwarnings("ignore:.*found in sys.modules:RuntimeWarning")
def test_a_recipe_builds_its_configuration_when_run_under_another_main(module, config_name, monkeypatch):
    """``python -m cProfile -m train.melcnn`` runs the recipe's code under a name whose module in sys.modules is
    cProfile's: its class constants (the --mix choices) must not turn into dataclass fields, which the command
    line has no flags for."""
    monkeypatch.setitem(sys.modules, "profiler_main", types.ModuleType("profiler_main"))
    recipe = runpy.run_module(module, run_name="profiler_main")
    config_class = recipe[config_name]
    assert "MIXES" not in {field.name for field in dataclasses.fields(config_class)}
    config = config_class.from_args(recipe["build_parser"]().parse_args(["--seeds", "1"]))
    assert config.run_seeds == (1,) and config.mix in config_class.MIXES
