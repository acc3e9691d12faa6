"""Run bookkeeping shared by the training commands: their common flags, which (split, seed) runs to make
and in which folders, the one-stage training loop, and the mean +- std summary of several runs."""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from torch import nn

from edge.atomic import write_json
from train.data.esc50 import DatasetError, Split, parse_splits
from train.engine import PRECISIONS, Trainer, checkpoint_info


MIX_HELP = {"between-class": "level-aware waveform mixing, ratio ~ U(0, 1), Tokozume et al. 2018",
            "mixup": "Zhang et al. 2018", "none": "no mixing"}


def command_line(module: str) -> str:
    """The command that started this process, as ``python -m module args...``."""
    return " ".join(["python", "-m", module] + [shlex.quote(a) for a in sys.argv[1:]])


def add_common_args(parser: argparse.ArgumentParser, *, epochs: int, batch_size: int, lr: float,
                    weight_decay: float = 1e-2, mixes: tuple = ("mixup", "none"), mix: str = "none",
                    mixup_alpha: float = 0.2, ema: float = 0.0) -> argparse.ArgumentParser:
    """Flags both training CLIs share; the defaults given here are the model's reported settings."""
    parser.add_argument("--data", default=os.environ.get("ESC50_DIR", "data/ESC-50"),
                        help="ESC-50 folder (meta/esc50.csv + audio/); default $ESC50_DIR or data/ESC-50")
    parser.add_argument("--split", default="book",
                        help="book (train 1-3, select on 4, test 5), cv (all five folds, fixed epochs) "
                             "or cvK (test on fold K only)")
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--lr", type=float, default=lr, help="maximum learning rate of the schedule")
    parser.add_argument("--weight-decay", type=float, default=weight_decay)
    parser.add_argument("--optimizer", choices=["adam", "adamw"], default="adamw")
    parser.add_argument("--schedule", choices=["onecycle", "cosine", "constant"], default="onecycle")
    parser.add_argument("--mix", choices=mixes, default=mix,
                        help="how each training batch is mixed with a shuffled copy of itself: " + ", ".join(
                            f"{name} ({MIX_HELP[name]})" for name in mixes) + " (default %(default)s)")
    parser.add_argument("--mixup-alpha", type=float, default=mixup_alpha, metavar="ALPHA",
                        help="with --mix mixup: the ratio is drawn from Beta(alpha, alpha) (default %(default)s)")
    parser.add_argument("--label-smoothing", type=float, default=0.0)
    parser.add_argument("--ema", type=float, default=ema, metavar="DECAY",
                        help="validate, select and save an exponential moving average of the weights with this "
                             "decay per step, e.g. 0.999 (0 = off; default %(default)s)")
    parser.add_argument("--find-lr", action="store_true",
                        help="run the LR range test, save lr_find.png in the run folder, print a suggestion, exit")
    parser.add_argument("--resume", metavar="RUN_DIR",
                        help="continue an interrupted run (its saved settings are used)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--precision", default="auto", choices=["auto", *PRECISIONS],
                        help="autocast dtype; auto = fp16 on CUDA, bf16 on CPUs with native bf16 "
                             "(AVX512-BF16/AMX), else fp32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", help="comma-separated seeds, one run each (overrides --seed), e.g. 0,1,2")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--out", default="runs", help="folder for run folders")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (epoch lines only)")
    return parser


def parse_seeds(args) -> list:
    if not args.seeds:
        return [args.seed]
    try:
        return [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds must be comma-separated integers, not {args.seeds!r}") from None


@dataclass
class PlannedRun:
    """One (split, seed) run; :meth:`create` makes its folder and saves the settings in config.json."""

    split: Split
    seed: int
    run_dir: Path
    resume: bool
    config: dict

    def create(self) -> Path:
        if not self.resume:
            self.run_dir.mkdir(parents=True, exist_ok=False)
            write_json(self.config, self.run_dir / "config.json")
        return self.run_dir


def plan_runs(args, model_name: str) -> list:
    """One :class:`PlannedRun` per (split, seed), in runs/<model>-<split>-seed<k>-<timestamp>/. With
    ``--resume RUN`` the run's saved settings are loaded into ``args`` and the plan is that run alone; a run
    saved by a version with other settings is refused (resume it with that version)."""
    if args.resume:
        run_dir = Path(args.resume)
        config_path = run_dir / "config.json"
        if not config_path.is_file():
            raise FileNotFoundError(f"{config_path}: not a run folder (no config.json)")
        saved = json.loads(config_path.read_text())
        keep = {"resume": args.resume, "device": args.device, "workers": args.workers,
                "no_progress": args.no_progress}
        missing = sorted(set(vars(args)) - set(saved) - set(keep))
        if missing:
            raise ValueError(f"{config_path}: saved by another version of this code (no {', '.join(missing)}); "
                             f"resume it with the version it was started with (commit in its metrics or log)")
        vars(args).update({**saved, **keep})
        return [PlannedRun(parse_splits(saved["split"])[0], saved["seed"], run_dir, True, saved)]
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return [PlannedRun(split, seed, Path(args.out) / f"{model_name}-{split.name}-seed{seed}-{stamp}", False,
                       {**vars(args), "split": split.name, "seed": seed, "seeds": None, "resume": None})
            for seed in parse_seeds(args) for split in parse_splits(args.split)]


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


def run_trainer(args, run: PlannedRun, model: nn.Module, *, name: str, model_kwargs: dict, classes: list,
                input_spec: dict, datasets: tuple, augment, mix) -> Trainer:
    """The Trainer of one planned run of a one-stage recipe (``python -m train.<name>``), recording in
    metrics.json what every run records: model, split, seed, protocol, command, augmentation, settings."""
    train_set, valid_set, test_set = datasets
    metadata = {"model": name, "model_kwargs": model_kwargs, "split": run.split.name, "seed": run.seed,
                "protocol": protocol_text(run.split, args.epochs), "command": command_line(f"train.{name}"),
                "augment": repr(augment), "mix": repr(mix),
                "settings": {k: v for k, v in vars(args).items() if k != "resume"}}
    return Trainer(model, run.run_dir, train_set=train_set, valid_set=valid_set, test_set=test_set,
                   checkpoint_info=checkpoint_info(name, model_kwargs, classes, input_spec),
                   metadata=metadata, device=args.device, batch_size=args.batch_size, workers=args.workers,
                   seed=run.seed, mix=mix, label_smoothing=args.label_smoothing, precision=args.precision,
                   ema=args.ema, resume=run.resume, progress=False if args.no_progress else None)


def train_single_stage(trainer: Trainer, model: nn.Module, args, run: PlannedRun) -> dict:
    """The one-stage recipes (AudioNet, MelCNN): every parameter at ``--lr`` for ``--epochs``, then the test
    fold once; with ``--find-lr`` only the LR range test (returns {})."""
    groups = [{"params": model.parameters(), "lr": args.lr}]
    if args.find_lr:
        found = trainer.find_lr(groups, optimizer=args.optimizer)
        print(f"suggested learning rate {found.suggestion:.2e} (plot: {found.plot})")
        return {}
    trainer.fit("train", groups, args.epochs, optimizer=args.optimizer, weight_decay=args.weight_decay,
                schedule=args.schedule)
    metrics = trainer.finish()
    print(f"{run.run_dir}: test accuracy {metrics['test_accuracy']:.4f} (fold {run.split.test_fold}), "
          f"best epoch {metrics['best_epoch']}, {metrics['wall_time_s'] / 60:.1f} min")
    return metrics


def run_recipe(args, name: str, train_all) -> int:
    """The body of a training command: plan its runs, train them (``train_all(plan)`` returns their metrics)
    and report; bad data or settings give one line on stderr and exit status 2."""
    try:
        plan = plan_runs(args, name)
        results = train_all(plan)
    except (DatasetError, FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    report_runs(results, plan, args)
    return 0


def report_runs(results: list, plan: list, args) -> None:
    """After several runs (seeds or folds): print and write their mean +- std next to the run folders."""
    if len(results) > 1 and not args.find_lr:
        summary = summarize(results, Path(args.out) / f"{plan[0].run_dir.name}-summary.json")
        print(f"test accuracy over {len(results)} runs: {summary['mean_test_accuracy']:.4f} "
              f"+- {summary['std_test_accuracy']:.4f}")


def mean_std(values) -> dict:
    """Mean and sample standard deviation (0 for a single value)."""
    values = np.asarray(values, dtype=float)
    return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0}


def summarize(results: list, path: Path) -> dict:
    """Mean and standard deviation of test accuracy over several runs, written to ``path``."""
    stats = mean_std([r["test_accuracy"] for r in results])
    summary = {"runs": [{"split": r["split"], "seed": r["seed"], "test_accuracy": r["test_accuracy"]}
                        for r in results],
               "mean_test_accuracy": stats["mean"], "std_test_accuracy": stats["std"]}
    write_json(summary, path)
    return summary
