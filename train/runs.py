"""Run bookkeeping shared by the training commands: which (split, seed) runs to make and in which folders,
the one-stage training loop, and the mean +- std summary of several runs.

``python -m train.runs RUN_DIR... --out FILE`` summarises finished runs, e.g. seeds trained in parallel."""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from torch import nn

from edge.atomic import write_json
from edge.provenance import git_commit
from train.data.esc50 import DatasetError, Split, cross_validation_splits, parse_splits
from train.config import TrainingConfig
from train.engine import Trainer, checkpoint_info


def command_line(module: str) -> str:
    """The command that started this process, as ``python -m module args...``."""
    return " ".join(["python", "-m", module] + [shlex.quote(a) for a in sys.argv[1:]])


@dataclass
class PlannedRun:
    """One (split, seed) run; :meth:`create` makes its folder and saves the settings in config.json.
    ``command``: the one that started it, which a resume keeps (None for runs saved before config.json had it);
    ``resumed_with``: the one resuming it now."""

    split: Split
    seed: int
    run_dir: Path
    resume: bool
    config: dict
    command: str | None
    resumed_with: str | None = None

    def create(self) -> Path:
        if not self.resume:
            self.run_dir.mkdir(parents=True, exist_ok=False)
            write_json(self.config, self.run_dir / "config.json")
        return self.run_dir


def plan_runs(config: TrainingConfig, model_name: str, module: str | None = None) -> list:
    """One :class:`PlannedRun` per (split, seed), in runs/<model>-<split>-seed<k>-<timestamp>/, started by
    ``python -m train.<model_name>`` (else ``module``); with ``resume`` (a configuration already
    :meth:`~train.config.TrainingConfig.resumed`), that run alone."""
    command = command_line(module or f"train.{model_name}")
    if config.resume:
        started_by = json.loads((Path(config.resume) / "config.json").read_text()).get("command")
        return [PlannedRun(parse_splits(config.split)[0], config.seed, Path(config.resume), True, config.to_json(),
                           started_by, resumed_with=command)]
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return [PlannedRun(split, seed, Path(config.out) / f"{model_name}-{split.name}-seed{seed}-{stamp}", False,
                       {**config.to_json(), "split": split.name, "seed": seed, "seeds": None, "resume": None,
                        "commit": git_commit(), "command": command},  # what it starts with: a resume names both
                       command)
            for seed in config.run_seeds for split in parse_splits(config.split)]


def protocol_text(split, epochs: int) -> str:
    """How a run on ``split`` chooses its weights and when it sees the test fold, for metrics.json."""
    train = ", ".join(map(str, split.train_folds))
    if split.valid_folds:
        valid = ", ".join(map(str, split.valid_folds))
        selection = f"the epoch with the best accuracy on fold {valid} is kept (of {epochs})"
    else:
        selection = f"no validation fold: the weights after {epochs} epochs are kept"
    return (f"train on folds {train}; {selection}; fold {split.test_fold} is evaluated once, "
            f"with those weights, at the end")


def run_metrics(run_dir) -> dict:
    """A finished run's metrics.json: its split, settings and scores."""
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a finished run (no metrics.json)")
    return json.loads(path.read_text())


def run_split(run_dir) -> str:
    """The split a finished run was tested on."""
    return run_metrics(run_dir)["split"]


def training_folds(runs, scored_folds) -> dict:
    """{run: the folds it trained on}, from each finished run's metrics.json; ValueError naming the first run that
    trained on one of ``scored_folds``: its weights have seen those clips, so a score there says nothing."""
    trained_on = {run: parse_splits(run_split(run))[0].train_folds for run in runs}
    for run, folds in trained_on.items():
        if set(scored_folds) & set(folds):
            raise ValueError(f"{run}: trained on folds {', '.join(map(str, folds))}; score it on the others")
    return trained_on


def run_trainer(config: TrainingConfig, run: PlannedRun, model: nn.Module, *, name: str, model_kwargs: dict,
                classes: list, input_spec: dict, datasets: tuple, augment, mix, restyle=None,
                teacher: nn.Module | None = None, teacher_weight: float = 0.5, consistency: float = 0.0,
                epochs: int | None = None) -> Trainer:
    """The Trainer of one planned run of a recipe, recording in metrics.json what every run records: model,
    split, seed, protocol, the command that started it (and the one that resumed it), augmentation, settings.
    ``teacher`` and ``teacher_weight``: distillation; ``consistency``: its weight (train.engine.Trainer);
    ``epochs``: of all its stages (default ``config.epochs``: one stage)."""
    train_set, valid_set, test_set = datasets
    metadata = {"model": name, "model_kwargs": model_kwargs, "split": run.split.name, "seed": run.seed,
                "protocol": protocol_text(run.split, config.epochs if epochs is None else epochs),
                "command": run.command,
                "augment": repr(augment), "mix": repr(mix), "restyle": repr(restyle),
                "settings": {k: v for k, v in config.to_json().items() if k != "resume"}}
    if run.resumed_with:
        metadata["resumed_with_command"] = run.resumed_with
    return Trainer(model, run.run_dir, train_set=train_set, valid_set=valid_set, test_set=test_set,
                   checkpoint_info=checkpoint_info(name, model_kwargs, classes, input_spec),
                   metadata=metadata, device=config.device, batch_size=config.batch_size, workers=config.workers,
                   seed=run.seed, mix=mix, restyle=restyle, label_smoothing=config.label_smoothing,
                   precision=config.precision, ema=config.ema, teacher=teacher, teacher_weight=teacher_weight,
                   consistency=consistency,
                   resume=run.resume, progress=False if config.no_progress else None)


def train_single_stage(trainer: Trainer, model: nn.Module, config: TrainingConfig, run: PlannedRun) -> dict:
    """The one-stage recipes (AudioNet, MelCNN): every parameter at ``--lr`` for ``--epochs``, then the test
    fold once; with ``--find-lr`` only the LR range test (returns {})."""
    groups = [{"params": model.parameters(), "lr": config.lr}]
    if config.find_lr:
        found = trainer.find_lr(groups, optimizer=config.optimizer)
        print(f"suggested learning rate {found.suggestion:.2e} (plot: {found.plot})")
        return {}
    trainer.fit("train", groups, config.epochs, optimizer=config.optimizer, weight_decay=config.weight_decay,
                schedule=config.schedule)
    metrics = trainer.finish()
    print(f"{run.run_dir}: test accuracy {metrics['test_accuracy']:.4f} (fold {run.split.test_fold}), "
          f"best epoch {metrics['best_epoch']}, {metrics['wall_time_s'] / 60:.1f} min")
    return metrics


def run_recipe(config_class: type, namespace, name: str, train_all) -> int:
    """The body of a training command: build its configuration from the parsed command line (or the resumed
    run's), plan its runs, train them (``train_all(config, plan)`` returns their metrics) and report; bad data
    or settings give one line on stderr and exit status 2."""
    try:
        config = config_class.from_args(namespace).resumed()
        plan = plan_runs(config, name)
        results = train_all(config, plan)
    except (DatasetError, FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    report_runs(results, plan, config)
    return 0


def report_runs(results: list, plan: list, config: TrainingConfig) -> None:
    """After several runs (seeds or folds): print and write their mean +- std next to the run folders."""
    if len(results) > 1 and not config.find_lr:
        summary = summarize(results, Path(config.out) / f"{plan[0].run_dir.name}-summary.json")
        print(f"test accuracy over {len(results)} runs: {summary['mean_test_accuracy']:.4f} "
              f"+- {summary['std_test_accuracy']:.4f}")


def mean_std(values) -> dict:
    """Mean and sample standard deviation (0 for a single value)."""
    values = np.asarray(values, dtype=float)
    return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0}


def summarize(results: list, path: Path) -> dict:
    """Mean and standard deviation of test (and validation) accuracy over several runs, written to ``path``."""
    summary = {"runs": [{"split": r["split"], "seed": r["seed"], "valid_accuracy": r.get("valid_accuracy"),
                         "test_accuracy": r["test_accuracy"]} for r in results]}
    for name in ("valid", "test"):
        values = [r.get(f"{name}_accuracy") for r in results]
        if None not in values:
            stats = mean_std(values)
            summary[f"mean_{name}_accuracy"], summary[f"std_{name}_accuracy"] = stats["mean"], stats["std"]
    cross_validation = cross_validation_summary(results)
    if cross_validation:
        summary["cross_validation"] = cross_validation
    write_json(summary, path)
    return summary


def cross_validation_summary(results: list) -> dict | None:
    """With every fold of cross-validation (train.data.esc50's cv1..cv5 splits) for each of several seeds: each
    seed's mean over its folds, and the mean +- std of those means over the seeds, the number the published
    protocol reports; else None.
    (The std over all runs mixes how hard the folds are with how much the seeds differ.)"""
    test_folds = {split.name: split.test_fold for split in cross_validation_splits()}
    folds_by_seed: dict = {}
    for r in results:
        if r["split"] not in test_folds:
            return None
        folds_by_seed.setdefault(r["seed"], {})[test_folds[r["split"]]] = r["test_accuracy"]
    every_fold = set(test_folds.values())
    if (len(folds_by_seed) < 2 or len(results) != len(folds_by_seed) * len(every_fold)
            or any(set(folds) != every_fold for folds in folds_by_seed.values())):
        return None
    per_seed = {str(seed): float(np.mean(list(folds.values()))) for seed, folds in sorted(folds_by_seed.items())}
    stats = mean_std(list(per_seed.values()))
    return {"folds": len(every_fold), "per_seed_mean_test_accuracy": per_seed,
            "mean_over_seeds": stats["mean"], "std_over_seeds": stats["std"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.runs", description="Mean +- std of finished runs.")
    parser.add_argument("runs", nargs="+", type=Path, help="run folders, each with its metrics.json")
    parser.add_argument("--out", type=Path, required=True, help="summary JSON to write")
    args = parser.parse_args(argv)
    missing = [str(run) for run in args.runs if not (run / "metrics.json").is_file()]
    if missing:
        print(f"error: no metrics.json (unfinished or not a run folder): {', '.join(missing)}", file=sys.stderr)
        return 2
    summary = summarize([run_metrics(run) for run in args.runs], args.out)
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
