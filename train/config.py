"""The typed settings of a training command: one frozen dataclass per recipe, whose defaults are the
recipe's reported settings. The command line builds it once (:meth:`TrainingConfig.from_args`), resuming
replaces it by the run's saved one (:meth:`TrainingConfig.resumed`), and the code below only reads it."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

from train.engine import PRECISIONS

MIX_HELP = {"between-class": "sounds added at a perceived ratio ~ U(0, 1), as waveforms or as mel power, "
                             "Tokozume et al. 2018",
            "mixup": "Zhang et al. 2018", "time-cutmix": "a partner's frames replace a random span of each image, "
                                                          "CutMix along time", "none": "no mixing"}


@dataclass(frozen=True)
class TrainingConfig:
    """What every recipe sets: the data and protocol, the optimisation, the batch mixing, and where and how
    the runs are made. A recipe subclasses it with its own fields and its own defaults."""

    # Class constants stay unannotated here and in every recipe's subclass: never dataclass fields, also when a
    # recipe runs under another __main__ (python -m cProfile -m ...), where a string ClassVar cannot be resolved.
    MIXES = ("mixup", "none")  # the --mix choices of the recipe
    # Settings of the machine, not of the recipe: a resumed run takes them from the new command line.
    HOST_SETTINGS = ("resume", "device", "workers", "no_progress")

    data: str = "data/ESC-50"
    split: str = "book"
    epochs: int = 150
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-2
    optimizer: str = "adamw"
    schedule: str = "onecycle"
    mix: str = "none"
    mixup_alpha: float = 0.2
    label_smoothing: float = 0.0
    ema: float = 0.0
    find_lr: bool = False
    resume: str | None = None
    device: str = "auto"
    precision: str = "auto"
    seed: int = 0
    seeds: tuple | None = None  # several runs, one per seed (overrides seed)
    workers: int = 0
    out: str = "runs"
    no_progress: bool = False

    def __post_init__(self):
        if self.mix not in self.MIXES:
            raise ValueError(f"--mix must be one of {', '.join(self.MIXES)}, not {self.mix!r}")
        if self.epochs < 0 or self.batch_size < 1:
            raise ValueError(f"--epochs must be >= 0 and --batch-size >= 1, not {self.epochs} and {self.batch_size}")

    @property
    def run_seeds(self) -> tuple:
        return self.seeds or (self.seed,)

    @classmethod
    def from_args(cls, namespace: argparse.Namespace):
        """The configuration a parsed command line describes (its parser made by :func:`add_common_args` and
        the recipe's own flags, one per field)."""
        return cls(**{f.name: getattr(namespace, f.name) for f in dataclasses.fields(cls)})

    @classmethod
    def from_saved(cls, saved: dict, source: str = "settings"):
        """The configuration a run saved (config.json, beside the commit it started with); one saved by a version
        with other settings is refused."""
        saved = dict(saved)
        saved.pop("command", None)  # the command that started the run (train.runs.plan_runs): not a setting
        commit = saved.pop("commit", None)
        names = {f.name for f in dataclasses.fields(cls)}
        missing, unknown = sorted(names - set(saved)), sorted(set(saved) - names)
        if missing or unknown:
            differences = "; ".join(part for part in (f"no {', '.join(missing)}" if missing else "",
                                                      f"unknown {', '.join(unknown)}" if unknown else "") if part)
            raise ValueError(f"{source}: saved by another version of this code ({differences}); resume it with "
                             f"the version it was started with (commit {commit or 'unrecorded'})")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})

    def resumed(self):
        """With ``resume``: the settings saved in that run folder, with this command's host settings."""
        if not self.resume:
            return self
        config_path = Path(self.resume) / "config.json"
        if not config_path.is_file():
            raise FileNotFoundError(f"{config_path}: not a run folder (no config.json)")
        saved = self.from_saved(json.loads(config_path.read_text()), str(config_path))
        return dataclasses.replace(saved, **{name: getattr(self, name) for name in self.HOST_SETTINGS})

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def check_range(flag: str, value: float, low: float, high: float = float("inf")):
    """ValueError naming the flag unless ``low <= value <= high``: settings are checked once, in the config."""
    if not low <= value <= high:
        bounds = f"between {low:g} and {high:g}" if high != float("inf") else f">= {low:g}"
        raise ValueError(f"{flag} must be {bounds}, not {value}")


def int_list(text: str, what: str, low: float = float("-inf"), high: float = float("inf")) -> tuple:
    """Integers in [low, high] separated by commas, as an argparse type (``--seeds``, ``--widths``, ``--folds``)."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or not all(low <= v <= high for v in values):
        raise argparse.ArgumentTypeError(f"must be {what} separated by commas, not {text!r}")
    return values


def seeds_arg(text: str) -> tuple:
    """``--seeds 0,1,2``."""
    return int_list(text, "integers")


def add_common_args(parser: argparse.ArgumentParser, defaults: TrainingConfig) -> argparse.ArgumentParser:
    """The flags of :class:`TrainingConfig`, with ``defaults`` (the recipe's configuration) as defaults."""
    d = defaults
    parser.add_argument("--data", default=os.environ.get("ESC50_DIR", d.data),
                        help="ESC-50 folder (meta/esc50.csv + audio/); default $ESC50_DIR or data/ESC-50")
    parser.add_argument("--split", default=d.split,
                        help="book (train 1-3, select on 4, test 5), cv (all five folds, fixed epochs), "
                             "cvK (test on fold K only) or validK (like book, but select on fold K = 1-3 "
                             "and train on the other three of folds 1-4)")
    parser.add_argument("--epochs", type=int, default=d.epochs)
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--lr", type=float, default=d.lr, help="maximum learning rate of the schedule")
    parser.add_argument("--weight-decay", type=float, default=d.weight_decay)
    parser.add_argument("--optimizer", choices=["adam", "adamw"], default=d.optimizer)
    parser.add_argument("--schedule", choices=["onecycle", "cosine", "constant"], default=d.schedule)
    parser.add_argument("--mix", choices=d.MIXES, default=d.mix,
                        help="how each training batch is mixed with a shuffled copy of itself: " + ", ".join(
                            f"{name} ({MIX_HELP[name]})" for name in d.MIXES) + " (default %(default)s)")
    parser.add_argument("--mixup-alpha", type=float, default=d.mixup_alpha, metavar="ALPHA",
                        help="with --mix mixup: the ratio is drawn from Beta(alpha, alpha) (default %(default)s)")
    parser.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    parser.add_argument("--ema", type=float, default=d.ema, metavar="DECAY",
                        help="validate, select and save an exponential moving average of the weights with this "
                             "decay per step, e.g. 0.999 (0 = off; default %(default)s)")
    parser.add_argument("--find-lr", action="store_true",
                        help="run the LR range test, save lr_find.png in the run folder, print a suggestion, exit")
    parser.add_argument("--resume", metavar="RUN_DIR",
                        help="continue an interrupted run (its saved settings are used)")
    parser.add_argument("--device", default=d.device, choices=["auto", "cpu", "cuda"])
    parser.add_argument("--precision", default=d.precision, choices=["auto", *PRECISIONS],
                        help="autocast dtype; auto = fp16 on CUDA, bf16 on CPUs with native bf16 "
                             "(AVX512-BF16/AMX), else fp32")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--seeds", type=seeds_arg, default=d.seeds,
                        help="comma-separated seeds, one run each (overrides --seed), e.g. 0,1,2")
    parser.add_argument("--workers", type=int, default=d.workers, help="DataLoader worker processes")
    parser.add_argument("--out", default=d.out, help="folder for run folders")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (epoch lines only)")
    return parser
