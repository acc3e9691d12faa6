"""ResNet-50 transfer on log-mel images (the book's SpecResNet), trained in two stages.

Stage 1 trains the new head on a frozen ImageNet backbone; stage 2 unfreezes everything with
discriminative learning rates: one optimizer parameter group per block of layers, the head fastest
and the stem slowest. (The book's ``optim.Adam(params, lr=[1e-2, 1e-4, 1e-8])`` cannot run: Adam takes
one learning rate per *parameter group*, not a list.)
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision.models import ResNet50_Weights, resnet50

from edge.atomic import staged, write_json
from edge.frontend import FrontEnd
from edge.metadata import LOG_MEL_IMAGE
from train.data.cache import load_log_mels
from train.data.esc50 import N_CLASSES, DatasetError, class_names
from train.datasets import LogMelImages
from train.augment import build_mix
from train.data.esc50 import parse_splits
from train.engine import seed_everything
from train.config import TrainingConfig, add_common_args, check_range
from train.runs import command_line, mean_std, plan_runs, run_trainer
from train.specaugment import spec_augment

IMAGENET_WEIGHTS = ResNet50_Weights.IMAGENET1K_V2
FEATURES = 2048
HIDDEN = 500
DROPOUT = 0.5  # the book's head; the default of both SpecResNet50 and ResNetConfig

# Parameter groups of stage 2, fastest first: (name, backbone children in it).
EARLY_BLOCKS = ("conv1", "bn1", "layer1", "layer2")
LATE_BLOCKS = ("layer3", "layer4")


class WeightsError(RuntimeError):
    """Pretrained weights could not be loaded; the message says which and what to do instead."""


class SpecResNet50(nn.Module):
    """torchvision ResNet-50 backbone + the book's head Linear(2048,500)-ReLU-Dropout-Linear(500,n).

    ``weights``: ``"imagenet"`` (torchvision's IMAGENET1K_V2, downloaded once to the torch hub cache),
    a path to a torchvision ResNet-50 state dict, or ``None`` (random initialisation).
    """

    def __init__(self, n_classes: int = 50, weights="imagenet", dropout: float = DROPOUT):
        super().__init__()
        self.backbone = resnet50(weights=None)
        self.backbone.fc = nn.Identity()
        if weights is not None:
            load_backbone(self.backbone, resnet50_state_dict(weights), source=str(weights))
        self.head = nn.Sequential(nn.Linear(FEATURES, HIDDEN), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Linear(HIDDEN, n_classes))
        self.backbone_frozen = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def freeze_backbone(self, frozen: bool = True) -> "SpecResNet50":
        """Stage 1 (``frozen``): only the head learns, and backbone BatchNorm stays in eval mode.

        Freezing ``requires_grad`` does not freeze BatchNorm: in train mode it would still normalise
        with each batch's statistics and overwrite its ImageNet running mean/variance with spectrogram
        batches. The head would then learn on features that differ from those it sees at evaluation
        (running statistics) and the "frozen" backbone would change under it.
        """
        self.backbone_frozen = frozen
        for p in self.backbone.parameters():
            p.requires_grad_(not frozen)
        return self.train(self.training)

    def train(self, mode: bool = True) -> "SpecResNet50":
        super().train(mode)
        if self.backbone_frozen:
            self.backbone.eval()
        return self

    def param_groups(self, lr_head: float, lr_late: float, lr_early: float) -> list:
        """Stage 2 optimizer groups: head, layer3-4, stem+layer1-2 (each with its own ``lr``)."""
        return [
            {"name": "head", "params": list(self.head.parameters()), "lr": lr_head},
            {"name": "layer3-4", "params": self._block_params(LATE_BLOCKS), "lr": lr_late},
            {"name": "stem-layer2", "params": self._block_params(EARLY_BLOCKS), "lr": lr_early},
        ]

    def _block_params(self, names) -> list:
        return [p for name in names for p in getattr(self.backbone, name).parameters()]


def resnet50_state_dict(weights) -> dict:
    """The state dict named by ``weights``: ``"imagenet"`` or a file path."""
    if weights == "imagenet":
        try:
            return IMAGENET_WEIGHTS.get_state_dict(progress=True)
        except OSError as err:
            raise WeightsError(
                f"could not download the ImageNet ResNet-50 weights ({IMAGENET_WEIGHTS.url}): {err}. "
                "Offline, copy that file into $TORCH_HOME/hub/checkpoints/ (default ~/.cache/torch), "
                "or pass --weights PATH (a torchvision ResNet-50 state dict), "
                "or --weights none to train from scratch.") from None
    path = Path(weights)
    if not path.is_file():
        raise WeightsError(f"--weights {path}: no such file (expected a ResNet-50 state dict, "
                           "'imagenet' or 'none')")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or non-tensor files
        raise WeightsError(f"--weights {path}: not a loadable state dict ({err})") from None
    if not isinstance(state, dict):
        raise WeightsError(f"--weights {path}: expected a state dict, got {type(state).__name__}")
    return state


def load_backbone(backbone: nn.Module, state: dict, source: str) -> None:
    """Load a torchvision ResNet-50 state dict (its 1000-class ``fc`` is dropped) strictly."""
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    try:
        backbone.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise WeightsError(f"--weights {source}: not a ResNet-50 state dict:\n{err}") from None


# --------------------------------------------------------------------------- training runs

STAGE1 = "head"
STAGE2 = "all"


@dataclass(frozen=True)
class ResNetConfig(TrainingConfig):
    """The book's staged ResNet-50 transfer recipe (its defaults); ``ablation`` runs its three variants."""

    epochs: int = 20
    lr: float = 1e-2
    optimizer: str = "adam"
    weights: str | None = "imagenet"
    head_epochs: int = 5
    lr_late: float = 1e-4
    lr_early: float = 1e-8
    head_only: bool = False
    dropout: float = DROPOUT
    specaugment: bool = True
    freq_mask: int = 24
    time_mask: int = 32
    mask_fill: str = "mean"
    cache_dir: str | None = None
    ablation: bool = False

    def __post_init__(self):
        super().__post_init__()
        if self.ablation and self.split != "book":
            raise ValueError("--ablation runs on the book split; drop --split")
        check_range("--freq-mask", self.freq_mask, 1)
        check_range("--time-mask", self.time_mask, 1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m train.resnet", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d = ResNetConfig()
    add_common_args(parser, d)
    group = parser.add_argument_group("ResNet-50 transfer")
    group.add_argument("--weights", default=d.weights, type=lambda text: None if text.lower() == "none" else text,
                       help="imagenet (torchvision IMAGENET1K_V2), none, or PATH to a ResNet-50 state dict")
    group.add_argument("--head-epochs", type=int, default=d.head_epochs,
                       help="stage 1: epochs of the head on the frozen backbone")
    group.add_argument("--lr-late", type=float, default=d.lr_late,
                       help="stage 2 learning rate of layer3-4 (--lr is the head's)")
    group.add_argument("--lr-early", type=float, default=d.lr_early,
                       help="stage 2 learning rate of the stem and layer1-2")
    group.add_argument("--head-only", action="store_true",
                       help="skip stage 2: train the head alone for --head-epochs + --epochs epochs")
    group.add_argument("--dropout", type=float, default=d.dropout)
    group.add_argument("--specaugment", action=argparse.BooleanOptionalAction, default=d.specaugment,
                       help="frequency and time masks on training images, each with p=0.5")
    group.add_argument("--freq-mask", type=int, default=d.freq_mask, help="maximum frequency-mask width (mel bins)")
    group.add_argument("--time-mask", type=int, default=d.time_mask, help="maximum time-mask width (frames)")
    group.add_argument("--mask-fill", choices=["mean", "zero"], default=d.mask_fill)
    group.add_argument("--cache-dir", default=d.cache_dir, help="log-mel cache folder (default <dataset>/cache)")
    parser.add_argument("--ablation", action="store_true",
                        help="book split, three variants: frozen head only / staged / staged + SpecAugment")
    return parser


def train_run(config: ResNetConfig, planned, log_mels, clips, frontend: FrontEnd) -> dict:
    """Train one (split, seed) run in two stages and test it; returns its metrics."""
    split = planned.split
    train_idx, valid_idx, test_idx = ([i for i, c in enumerate(clips) if c.fold in folds]
                                      for folds in (split.train_folds, split.valid_folds, (split.test_fold,)))
    targets = np.array([c.target for c in clips])
    augment = spec_augment(config.freq_mask, config.time_mask, use_mean=config.mask_fill == "mean") \
        if config.specaugment else None

    def images(index, transform=None):
        return LogMelImages(log_mels[index], targets[index], frontend, transform)

    planned.create()
    seed_everything(planned.seed)
    model_kwargs = {"n_classes": N_CLASSES, "dropout": config.dropout}
    model = SpecResNet50(weights=config.weights, **model_kwargs)
    input_spec = {"kind": LOG_MEL_IMAGE, "sample_rate": frontend.sample_rate,
                  "clip_seconds": frontend.clip_seconds, "frontend": frontend.to_json()}
    mix = build_mix(config)
    # the checkpoint rebuilds the network without fetching ImageNet weights (settings record which were used)
    trainer = run_trainer(config, planned, model, name="resnet50", model_kwargs={**model_kwargs, "weights": None},
                          classes=class_names(clips), input_spec=input_spec,
                          datasets=(images(train_idx, augment), images(valid_idx) if valid_idx else None,
                                    images(test_idx)),
                          augment=augment, mix=mix, epochs=config.head_epochs + config.epochs)
    fit = dict(optimizer=config.optimizer, weight_decay=config.weight_decay, schedule=config.schedule)
    head = [{"name": "head", "params": model.head.parameters(), "lr": config.lr}]
    model.freeze_backbone(True)
    if config.find_lr:
        finding = trainer.find_lr(head, optimizer=config.optimizer)
        print(f"suggested head learning rate {finding.suggestion:.2e} (plot: {finding.plot})")
        return {}
    head_epochs = config.head_epochs + config.epochs if config.head_only else config.head_epochs
    if head_epochs:
        trainer.fit(STAGE1, head, head_epochs, **fit)
    if not config.head_only and config.epochs:
        model.freeze_backbone(False)
        trainer.fit(STAGE2, model.param_groups(config.lr, config.lr_late, config.lr_early), config.epochs, **fit)
    return trainer.finish()


# --------------------------------------------------------------------------- experiments and results table

ABLATION = {  # variant -> the settings it changes
    "head-only": {"head_only": True, "specaugment": False},
    "staged": {"head_only": False, "specaugment": False},
    "staged+specaugment": {"head_only": False, "specaugment": True},
}


def variant_name(config: ResNetConfig) -> str:
    return "head-only" if config.head_only else "staged+specaugment" if config.specaugment else "staged"


def variants(config: ResNetConfig) -> list:
    """[(name, configuration)]: the ablation's three variants, or the one the configuration describes."""
    if not config.ablation:
        return [(variant_name(config), config)]
    return [(name, dataclasses.replace(config, **change, ablation=False)) for name, change in ABLATION.items()]


def result_row(variant: str, metrics: dict, run_dir: Path) -> dict:
    return {"variant": variant, "split": metrics["split"], "seed": metrics["seed"],
            "valid_accuracy": metrics["valid_accuracy"], "test_accuracy": metrics["test_accuracy"],
            "best_epoch": metrics["best_epoch"], "epochs": len(metrics["epochs"]),
            "wall_time_s": round(metrics["wall_time_s"], 1), "run": str(run_dir)}


def summarize_rows(rows: list) -> list:
    """Mean and sample standard deviation of the test accuracies of each variant."""
    summary = []
    for variant in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == variant]
        summary.append({"variant": variant, "runs": len(mine),
                        "test_accuracy": mean_std([r["test_accuracy"] for r in mine])})
    return summary


def format_results(rows: list, summary: list, command: str) -> str:
    """results.md: one line per run, then mean ± std per variant."""
    def pct(value):
        return "-" if value is None else f"{100 * value:.1f}"

    lines = ["# ResNet-50 transfer results", "", f"`{command}`", "",
             "| variant | split | seed | valid acc % | test acc % | epochs | train s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['split']} | {r['seed']} | {pct(r['valid_accuracy'])} | "
                     f"{pct(r['test_accuracy'])} | {r['epochs']} | {r['wall_time_s']:.0f} |")
    lines += ["", "| variant | runs | test acc % (mean ± std) |", "|---|---|---|"]
    for s in summary:
        accuracy = s["test_accuracy"]
        lines.append(f"| {s['variant']} | {s['runs']} | {100 * accuracy['mean']:.1f} ± {100 * accuracy['std']:.1f} |")
    return "\n".join(lines) + "\n"


def write_results(rows: list, folder: Path, command: str) -> None:
    summary = summarize_rows(rows)
    write_json({"command": command, "runs": rows, "summary": summary}, folder / "results.json")
    with staged(folder / "results.md") as tmp:
        tmp.write_text(format_results(rows, summary, command))


def main(argv=None) -> int:
    config = ResNetConfig.from_args(build_parser().parse_args(argv)).resumed()
    frontend = FrontEnd()
    command = command_line("train.resnet")
    experiments = variants(config)
    n_runs = len(experiments) * len(parse_splits(config.split)) * len(config.run_seeds)
    results_dir = None
    if n_runs > 1 and not config.resume:
        label = "ablation" if config.ablation else config.split
        results_dir = Path(config.out) / f"resnet50-{label}-{datetime.now():%Y%m%d-%H%M%S}"
        results_dir.mkdir(parents=True)
    log_mels, clips = load_log_mels(config.data, frontend, config.cache_dir, progress=not config.no_progress)
    rows = []
    for name, settings in experiments:
        if results_dir is not None:
            settings = dataclasses.replace(settings, out=str(results_dir))
        model_name = "resnet50" if len(experiments) == 1 else f"resnet50-{name}"
        for planned in plan_runs(settings, model_name, "train.resnet"):
            metrics = train_run(settings, planned, log_mels, clips, frontend)
            if settings.find_lr:
                return 0
            rows.append(result_row(name, metrics, planned.run_dir))
            write_results(rows, results_dir or planned.run_dir, command)
            print(f"{planned.run_dir}: test accuracy {metrics['test_accuracy']:.4f}", flush=True)
    print(f"results: {(results_dir or planned.run_dir) / 'results.md'}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (WeightsError, DatasetError, ValueError, FileNotFoundError, FileExistsError) as err:
        sys.exit(f"error: {err}")
