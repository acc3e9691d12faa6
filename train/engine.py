"""The training engine shared by every model (AudioNet, MelCNN, the spectrogram ResNet-50).

A :class:`Trainer` owns one run folder and trains one model through named *stages*::

    trainer = Trainer(model, run_dir, train_set=..., valid_set=..., test_set=...,
                      checkpoint_info=checkpoint_info("audionet", {"depth": 5}, classes, input_spec),
                      metadata={"model": "audionet", "split": "book", "seed": 0, ...}, resume=False)
    trainer.find_lr([{"params": model.parameters()}])        # optional: LR range test + plot
    trainer.fit("head", [{"params": head, "lr": 1e-2}], epochs=5)           # stage 1
    trainer.fit("all", [{"params": body, "lr": 1e-4}, {"params": head, "lr": 1e-3}], epochs=20)
    metrics = trainer.finish()                               # test fold once, with best.pt

``fit`` builds the optimizer (Adam/AdamW) over the given parameter groups, each with its own maximum
learning rate, and steps a one-cycle, cosine or constant schedule every batch. Freezing is the
caller's business (set ``requires_grad`` before ``fit``; only pass trainable parameters).

After every epoch ``last.pt`` is written atomically with the model, optimizer, scheduler, scaler,
RNG states, history and stage. ``Trainer(..., resume=True)`` reloads it: ``fit`` then skips stages
that are complete and continues the current one from the start of the interrupted epoch. Shuffling,
augmentation and mixing draw from generators seeded by (seed, epoch), so a resumed run reproduces
an uninterrupted one. Model selection uses the validation folds only (``best.pt`` keeps the best
validation accuracy; with no validation folds it keeps the last epoch).

``ema`` (a decay per step, e.g. 0.999; 0 = off) keeps an exponential moving average of the weights and
BatchNorm statistics beside the model; that average is what is validated, selected and saved.

``mix`` (train.augment.Mixup; BetweenClass for waveforms, BetweenClassMel for log-mel images) mixes each
training batch with a shuffled copy of itself; the loss is cross-entropy against the mixed label distribution.
``restyle`` (train.augment.FreqMixStyle) changes each training batch before that, keeping its labels.

``teacher`` (a trained model, or train.distillation.AveragedModels of several, in eval mode) distils: each
training image then holds the student's view in the first half of its channels and the teacher's in the
second (train.datasets.LogMelImages' ``clean_view``), mixed alike, so the teacher sees what the student
sees, but recorded cleanly ("consistent teaching", Beyer et al. 2022). The target is
(1 - teacher_weight) * the (mixed) labels + teacher_weight * the teacher's probabilities. A training set may
instead give each clip a distribution over the classes as its target (train.distillation.clip_targets: a
teacher's probabilities of the whole clip, computed once); it is mixed as labels are.

``consistency`` (a weight; 0 = off) uses the same two views without a teacher: the model itself sees both in
one batch, and the Jensen-Shannon divergence between its predictions on the recorded and on the clean view,
times the weight, is added to the loss (AugMix's consistency loss, Hendrycks et al. 2020): the model is asked
for the same answer however the clip was recorded, not only for the label under each recording.

Mixed precision (``precision``): ``auto`` trains in float16 with loss scaling on CUDA and in
bfloat16 on CPUs with native bfloat16 (AVX512-BF16 or AMX), else in float32; weights, optimizer
state and the loss stay float32. A step the loss scaler skips (inf/NaN gradients) advances neither the
schedule nor the weight average. 2-D convolutions run channels-last on every device; everything runs on CPU.
"""
from __future__ import annotations

import copy
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from edge.atomic import staged, write_json
from edge.provenance import cpu_features, cpu_name, git_commit
from train.plots import plot_confusion, plot_curves, plot_lr_find

CHECKPOINT_FORMAT = 1
TEST_PROBABILITIES = "test_probabilities.json"


# --------------------------------------------------------------------------- small utilities

def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> cuda if available else cpu; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda, not {name!r}")
    return torch.device(name)


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_has_native_bf16() -> bool:
    """True on x86 CPUs with AVX512-BF16 or AMX, where bfloat16 convolutions are faster than float32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``--precision`` on ``device`` (None = float32 throughout).

    ``auto`` -> float16 on CUDA, bfloat16 on a CPU with native bfloat16, else float32.
    """
    if name == "auto":
        if device.type == "cuda":
            return torch.float16
        return torch.bfloat16 if cpu_has_native_bf16() else None
    if name not in PRECISIONS:
        raise ValueError(f"--precision must be auto, {', '.join(PRECISIONS)}, not {name!r}")
    if name == "fp16" and device.type != "cuda":
        raise ValueError("--precision fp16 needs CUDA (on CPU use bf16 or fp32)")
    return PRECISIONS[name]


def scaled_step(scaler: torch.amp.GradScaler, optimizer, loss: torch.Tensor) -> bool:
    """Backward and optimizer step through the loss scaler. False when the scaler skipped the step
    (float16 gradients with inf or NaN), so that the schedule and the weight average wait for the next."""
    scaler.scale(loss).backward()
    scale = scaler.get_scale() if scaler.is_enabled() else None
    scaler.step(optimizer)
    scaler.update()
    return scale is None or scaler.get_scale() >= scale


def jensen_shannon(logits: torch.Tensor, other_logits: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the Jensen-Shannon divergence (nats) between two predictions given as logits."""
    p, q = logits.softmax(1), other_logits.softmax(1)
    log_mixture = ((p + q) / 2).clamp_min(1e-7).log()
    return (F.kl_div(log_mixture, p, reduction="batchmean") + F.kl_div(log_mixture, q, reduction="batchmean")) / 2


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed for everything random in one epoch (shuffling, augmentation, mixing)."""
    return (seed * 1_000_003 + epoch * 7919 + 1) % 2**63


def save_atomic(obj, path: Path) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename over ``path``."""
    with staged(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def checkpoint_info(model_name: str, model_kwargs: dict, classes: list, input_spec: dict) -> dict:
    """The fixed part of ``best.pt`` (see the contract): how to rebuild and feed the model."""
    return {"model_name": model_name, "model_kwargs": dict(model_kwargs), "classes": list(classes),
            "input": dict(input_spec)}


def load_best(run_dir, map_location="cpu") -> dict:
    """Read ``RUN/best.pt`` (or a path to a .pt file) with a clear error when it is missing; tensors and plain
    values only (``weights_only``), so a checkpoint handed over with a run folder cannot run code."""
    path = Path(run_dir)
    path = path / "best.pt" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint here (train a model first)")
    return torch.load(path, map_location=map_location, weights_only=True)


# --------------------------------------------------------------------------- the trainer

@dataclass
class LRFinding:
    """Result of the LR range test: the swept LRs, smoothed losses, a suggestion and the plot."""

    lrs: list
    losses: list
    suggestion: float
    plot: Path


class Trainer:
    """Trains ``model`` in ``run_dir``; see the module docstring for the workflow."""

    def __init__(self, model: nn.Module, run_dir, *, train_set, valid_set, test_set,
                 checkpoint_info: dict, metadata: dict, device="auto", batch_size: int = 32,
                 workers: int = 0, seed: int = 0, mix=None, restyle=None, label_smoothing: float = 0.0,
                 precision: str = "auto", ema: float = 0.0,
                 teacher: nn.Module | None = None, teacher_weight: float = 0.5, consistency: float = 0.0,
                 resume: bool = False, progress: bool | None = None):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.cuda = self.device.type == "cuda"
        # 2-D convolutions run faster on channels-last tensors on GPUs and, through oneDNN, on CPUs with AVX-512
        # (MelCNN's bf16 epochs 1.09x; level in fp32 with AVX2 only: docs/experiments.md, Measurements).
        self.channels_last = any(isinstance(m, nn.Conv2d) for m in model.modules())
        memory_format = torch.channels_last if self.channels_last else torch.preserve_format
        self.model = model.to(self.device, memory_format=memory_format)
        self.train_set, self.valid_set, self.test_set = train_set, valid_set, test_set
        self.info = checkpoint_info
        self.metadata = {"commit": git_commit(), **metadata}  # the code the run starts with (a resume keeps it)
        self.batch_size, self.workers, self.seed = batch_size, workers, seed
        self.mix, self.restyle, self.label_smoothing = mix, restyle, label_smoothing
        self.progress = progress
        self.amp_dtype = resolve_precision(precision, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        if not 0.0 <= ema < 1.0:
            raise ValueError(f"ema must be a decay in [0, 1) (0 = off), not {ema!r}")
        self.ema_decay, self.ema_updates = ema, 0
        self.ema_model = copy.deepcopy(self.model).requires_grad_(False) if ema else None
        if not 0.0 <= teacher_weight <= 1.0:
            raise ValueError(f"teacher_weight must be in [0, 1], not {teacher_weight!r}")
        self.teacher = (None if teacher is None else
                        teacher.to(self.device, memory_format=memory_format).eval().requires_grad_(False))
        self.teacher_weight = teacher_weight
        if consistency < 0:
            raise ValueError(f"consistency must be a weight >= 0 (0 = off), not {consistency!r}")
        self.consistency = consistency
        self.history: list = []
        self.completed_stages: list = []
        self.best = {"valid_accuracy": None, "epoch": None}
        self.elapsed_s = 0.0
        self.resumed: dict | None = None
        if resume:
            self._load_last()
        elif (self.run_dir / "last.pt").exists():
            raise FileExistsError(f"{self.run_dir} already holds a run (last.pt); resume it or pick another folder")

    # ----------------------------------------------------------------- data

    def _loader(self, dataset, *, train: bool, generator: torch.Generator | None = None):
        drop_last = train and len(dataset) > self.batch_size
        return torch.utils.data.DataLoader(
            dataset, batch_size=self.batch_size, shuffle=train, drop_last=drop_last,
            generator=generator, num_workers=self.workers, pin_memory=self.cuda)

    def _to_device(self, x: torch.Tensor, y: torch.Tensor):
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y.to(self.device, non_blocking=True)

    def _views(self, x: torch.Tensor):
        """(the recorded images, the clean ones or None): with a teacher or consistency, each image holds both."""
        if self.teacher is None and not self.consistency:
            return x, None
        if x.shape[1] % 2:
            raise ValueError(f"with a teacher or consistency, training images hold two views (an even number of "
                             f"channels), not {x.shape[1]} channels")
        return x.chunk(2, dim=1)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def _bar(self, loader, desc: str):
        return tqdm(loader, desc=desc, leave=False, disable=None if self.progress is None else not self.progress,
                    dynamic_ncols=True)

    # ----------------------------------------------------------------- checkpoints

    def _state(self, stage: str, stage_epoch: int, stage_epochs: int, optimizer, scheduler) -> dict:
        return {
            "format": CHECKPOINT_FORMAT, "seed": self.seed, "commit": self.metadata["commit"],
            "stage": stage, "stage_epoch": stage_epoch, "stage_epochs": stage_epochs,
            "completed_stages": list(self.completed_stages),
            "model": self.model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "rng": {"python": random.getstate(), "numpy": np.random.get_state(),
                    "torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if self.cuda else None},
            "history": self.history, "best": self.best, "elapsed_s": self.elapsed_s,
            "ema": None if self.ema_model is None else {"state_dict": self.ema_model.state_dict(),
                                                        "updates": self.ema_updates},
        }

    def _load_last(self) -> None:
        path = self.run_dir / "last.pt"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: nothing to resume (no last.pt in this run folder)")
        # on the CPU: the RNG states must stay CPU byte tensors; the weights and optimizer state move on loading
        state = torch.load(path, map_location="cpu", weights_only=False)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path}: unknown checkpoint format {state.get('format')!r}")
        if state["seed"] != self.seed:
            raise ValueError(f"{path}: was trained with seed {state['seed']}, not {self.seed}")
        self.model.load_state_dict(state["model"])
        if (self.ema_model is None) != (state.get("ema") is None):
            raise ValueError(f"{path}: was trained {'with' if state.get('ema') else 'without'} --ema; "
                             f"resume with the same settings")
        if self.ema_model is not None:
            self.ema_model.load_state_dict(state["ema"]["state_dict"])
            self.ema_updates = state["ema"]["updates"]
        if state["scaler"]:  # empty when saved by a disabled scaler (a run started on the CPU, resumed on CUDA)
            self.scaler.load_state_dict(state["scaler"])
        random.setstate(state["rng"]["python"])
        np.random.set_state(state["rng"]["numpy"])
        torch.set_rng_state(state["rng"]["torch"])
        if self.cuda and state["rng"]["cuda"] is not None:
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.history, self.best = state["history"], state["best"]
        self.completed_stages, self.elapsed_s = state["completed_stages"], state["elapsed_s"]
        if state.get("commit", self.metadata["commit"]) != self.metadata["commit"]:  # metrics.json names both
            self.metadata.update(commit=state["commit"], resumed_with_commit=self.metadata["commit"])
        self.resumed = state
        print(f"resuming {self.run_dir}: stage {state['stage']!r} after epoch "
              f"{state['stage_epoch']}/{state['stage_epochs']}, completed stages {self.completed_stages}")

    @property
    def selected_model(self) -> nn.Module:
        """The weights that are validated and saved: the moving average with ``ema``, else the model."""
        return self.model if self.ema_model is None else self.ema_model

    def _update_ema(self) -> None:
        """ema <- d * ema + (1 - d) * model, with d = min(decay, (1 + n) / (10 + n)) after n updates
        (TensorFlow's ExponentialMovingAverage warm-up), for weights and float buffers alike."""
        decay = min(self.ema_decay, (1 + self.ema_updates) / (10 + self.ema_updates))
        self.ema_updates += 1
        with torch.no_grad():
            for average, current in zip(self.ema_model.state_dict().values(), self.model.state_dict().values()):
                if average.is_floating_point():
                    average.lerp_(current, 1 - decay)
                else:
                    average.copy_(current)

    def _save_best(self, epoch: int, valid_accuracy) -> None:
        state_dict = {k: v.detach().cpu() for k, v in self.selected_model.state_dict().items()}
        save_atomic({**self.info, "state_dict": state_dict, "epoch": epoch,
                     "valid_accuracy": valid_accuracy}, self.run_dir / "best.pt")

    # ----------------------------------------------------------------- optimisation

    def _optimizer(self, param_groups, name: str, weight_decay: float):
        groups = [dict(g, params=[p for p in g["params"] if p.requires_grad]) for g in param_groups]
        if not any(g["params"] for g in groups):
            raise ValueError("no trainable parameters in the given parameter groups")
        for g in groups:
            if "lr" not in g:
                raise ValueError("every parameter group needs its maximum learning rate 'lr'")
        cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name]
        return cls(groups, weight_decay=weight_decay)

    @staticmethod
    def _scheduler(optimizer, schedule: str, total_steps: int, pct_start: float):
        max_lrs = [g["lr"] for g in optimizer.param_groups]
        if schedule == "onecycle":
            return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lrs, total_steps=total_steps,
                                                       pct_start=pct_start)
        if schedule == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
        if schedule == "constant":
            return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        raise ValueError(f"unknown schedule {schedule!r} (onecycle, cosine or constant)")

    def _train_epoch(self, optimizer, scheduler, generator: torch.Generator, desc: str) -> dict:
        self.model.train()
        total_loss = correct = count = 0.0
        bar = self._bar(self._loader(self.train_set, train=True, generator=generator), desc)
        for x, y in bar:
            x, y = self._to_device(x, y)
            if self.restyle is not None:
                x = self.restyle(x)
            if self.mix is not None:
                x, partner, share = self.mix(x)
            x, clean_view = self._views(x)
            with self._autocast():
                if self.consistency:
                    logits, clean_logits = self.model(torch.cat([x, clean_view])).chunk(2)
                else:
                    logits = self.model(x)
                # soft targets (a distribution per clip, e.g. distilled from whole clips) or class indices
                target = y.float() if y.is_floating_point() else F.one_hot(y, logits.shape[1]).float()
                if self.mix is not None:
                    target = share[:, None] * target + (1 - share[:, None]) * target[partner]
                loss_target = target
                if self.teacher is not None:
                    with torch.no_grad():
                        taught = self.teacher(clean_view).float().softmax(1)
                    loss_target = (1 - self.teacher_weight) * target + self.teacher_weight * taught
                loss = F.cross_entropy(logits.float(), loss_target, label_smoothing=self.label_smoothing)
                if self.consistency:
                    loss = loss + self.consistency * jensen_shannon(logits.float(), clean_logits.float())
            optimizer.zero_grad(set_to_none=True)
            if scaled_step(self.scaler, optimizer, loss):
                scheduler.step()
                if self.ema_model is not None:
                    self._update_ema()
            hits = target.gather(1, logits.argmax(1, keepdim=True)).sum()  # mixed labels give partial credit
            total_loss += loss.item() * len(y)
            correct += hits.item()
            count += len(y)
            bar.set_postfix(loss=f"{total_loss / count:.3f}", acc=f"{correct / count:.3f}")
        return {"train_loss": total_loss / count, "train_accuracy": correct / count}

    @torch.no_grad()
    def evaluate(self, dataset, desc: str = "eval", model: nn.Module | None = None) -> dict:
        """Loss, accuracy, predictions, probabilities and targets of ``model`` (default: the current model) on
        ``dataset``."""
        model = self.model if model is None else model
        model.eval()
        losses, probabilities, targets = [], [], []
        for x, y in self._bar(self._loader(dataset, train=False), desc):
            x, y = self._to_device(x, y)
            with self._autocast():
                logits = model(x)
            losses.append(F.cross_entropy(logits.float(), y, reduction="sum").item())
            probabilities.append(logits.float().softmax(1).cpu())
            targets.append(y.cpu())
        probabilities, targets = torch.cat(probabilities).numpy(), torch.cat(targets).numpy()
        preds = probabilities.argmax(1)
        return {"loss": sum(losses) / len(targets), "accuracy": float((preds == targets).mean()),
                "predictions": preds, "probabilities": probabilities, "targets": targets}

    def fit(self, stage: str, param_groups, epochs: int, *, optimizer: str = "adamw",
            weight_decay: float = 1e-2, schedule: str = "onecycle", pct_start: float = 0.3) -> list:
        """Train one stage for ``epochs`` epochs; ``param_groups`` = [{"params": ..., "lr": max_lr}, ...].

        Returns the history (all stages so far). Completed stages are skipped on resume.
        """
        if stage in self.completed_stages:
            print(f"stage {stage!r} already complete, skipping")
            return self.history
        param_groups = [dict(g, params=list(g["params"])) for g in param_groups]
        opt = self._optimizer(param_groups, optimizer, weight_decay)
        steps_per_epoch = len(self._loader(self.train_set, train=True))
        sched = self._scheduler(opt, schedule, max(1, epochs * steps_per_epoch), pct_start)
        start = 0
        if self.resumed is not None and self.resumed["stage"] == stage:
            if self.resumed["stage_epochs"] != epochs:
                raise ValueError(f"stage {stage!r} was started with {self.resumed['stage_epochs']} epochs, "
                                 f"not {epochs}: resume with the same settings")
            opt.load_state_dict(self.resumed["optimizer"])
            sched.load_state_dict(self.resumed["scheduler"])
            start = self.resumed["stage_epoch"]
        elif self.resumed is not None and self.resumed["stage"] not in self.completed_stages:
            raise ValueError(f"the checkpoint is in stage {self.resumed['stage']!r}, not {stage!r}")
        self.resumed = None
        generator = torch.Generator()
        for stage_epoch in range(start, epochs):
            epoch = len(self.history) + 1
            t0 = time.perf_counter()
            seed = epoch_seed(self.seed, epoch)
            generator.manual_seed(seed)
            torch.manual_seed(seed)
            row = {"epoch": epoch, "stage": stage, "lr": [g["lr"] for g in opt.param_groups]}
            row.update(self._train_epoch(opt, sched, generator, f"{stage} {stage_epoch + 1}/{epochs}"))
            if self.valid_set is not None and len(self.valid_set):
                valid = self.evaluate(self.valid_set, "valid", self.selected_model)
                row.update(valid_loss=valid["loss"], valid_accuracy=valid["accuracy"])
                if self.best["valid_accuracy"] is None or valid["accuracy"] > self.best["valid_accuracy"]:
                    self.best = {"valid_accuracy": valid["accuracy"], "epoch": epoch}
                    self._save_best(epoch, valid["accuracy"])
            else:
                self.best = {"valid_accuracy": None, "epoch": epoch}
                self._save_best(epoch, None)
            row["seconds"] = time.perf_counter() - t0
            self.elapsed_s += row["seconds"]
            self.history.append(row)
            if stage_epoch + 1 == epochs:
                self.completed_stages.append(stage)
            save_atomic(self._state(stage, stage_epoch + 1, epochs, opt, sched), self.run_dir / "last.pt")
            print(format_epoch(row), flush=True)
        return self.history

    # ----------------------------------------------------------------- LR range test

    def find_lr(self, param_groups=None, *, start_lr: float = 1e-7, end_lr: float = 10.0, steps: int = 100,
                beta: float = 0.98, diverge: float = 4.0, optimizer: str = "adam") -> LRFinding:
        """The book's ``find_lr``: raise the LR exponentially each batch, smooth the loss, stop when it
        diverges, restore the weights. Saves ``lr_find.png`` and suggests the LR of steepest descent."""
        groups = param_groups or [{"params": self.model.parameters()}]
        saved = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        opt = self._optimizer([dict(g, lr=start_lr) for g in groups], optimizer, 0.0)
        factor = (end_lr / start_lr) ** (1 / max(1, steps - 1))
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, 0))
        lrs, losses, avg, best = [], [], 0.0, math.inf
        self.model.train()
        lr = start_lr
        with self._bar(range(steps), "find_lr") as bar:
            while len(lrs) < steps:
                for x, y in self._loader(self.train_set, train=True, generator=generator):
                    x, y = self._to_device(x, y)
                    x = self._views(x)[0]
                    for g in opt.param_groups:
                        g["lr"] = lr
                    with self._autocast():
                        loss = F.cross_entropy(self.model(x).float(), y, label_smoothing=self.label_smoothing)
                    opt.zero_grad(set_to_none=True)
                    scaled_step(self.scaler, opt, loss)
                    avg = beta * avg + (1 - beta) * loss.item()
                    smoothed = avg / (1 - beta ** (len(lrs) + 1))
                    if not math.isfinite(smoothed) or (len(lrs) > 1 and smoothed > diverge * best):
                        steps = len(lrs)
                        break
                    best = min(best, smoothed)
                    lrs.append(lr)
                    losses.append(smoothed)
                    bar.update(1)
                    lr *= factor
                    if len(lrs) >= steps:
                        break
        self.model.load_state_dict(saved)
        if len(lrs) < 3:
            raise RuntimeError("the LR range test diverged at once; lower start_lr")
        suggestion = suggest_lr(lrs, losses)
        plot = self.run_dir / "lr_find.png"
        plot_lr_find(lrs, losses, suggestion, plot)
        return LRFinding(lrs, losses, suggestion, plot)

    # ----------------------------------------------------------------- final evaluation

    def finish(self) -> dict:
        """Evaluate the test fold once with ``best.pt`` and write metrics.json, test_probabilities.json,
        curves.png, confusion.png."""
        best = load_best(self.run_dir, map_location=self.device)
        self.model.load_state_dict(best["state_dict"])
        test = self.evaluate(self.test_set, "test")
        classes = self.info["classes"]
        confusion = confusion_matrix(test["targets"], test["predictions"], len(classes))
        support = confusion.sum(1)
        per_class = {name: (float(confusion[i, i] / support[i]) if support[i] else None)
                     for i, name in enumerate(classes)}
        metrics = {
            **self.metadata,
            "epochs": self.history,
            "best_epoch": best["epoch"],
            "valid_accuracy": best["valid_accuracy"],
            "test_accuracy": test["accuracy"],
            "test_loss": test["loss"],
            "test_clips": int(len(test["targets"])),
            "per_class_accuracy": per_class,
            "wall_time_s": self.elapsed_s,
            "device": str(self.device),
            "hardware": {"cpu": cpu_name(), "cpu_features": cpu_features(), "threads": torch.get_num_threads(),
                         "gpu": torch.cuda.get_device_name(self.device) if self.cuda else None},
            "precision": str(self.amp_dtype or torch.float32).removeprefix("torch."),
            "ema_decay": self.ema_decay,
            "torch": torch.__version__,
        }
        write_json(metrics, self.run_dir / "metrics.json")
        write_test_probabilities(test, classes, self.run_dir / TEST_PROBABILITIES)
        plot_curves(self.history, self.run_dir / "curves.png", title=self.run_dir.name)
        plot_confusion(confusion, classes, self.run_dir / "confusion.png",
                       title=f"{self.run_dir.name}: test accuracy {test['accuracy']:.3f}")
        return metrics


def write_test_probabilities(test: dict, classes: list, path: Path) -> None:
    """Each test clip's class probabilities (test-fold clips in meta/esc50.csv order), on one line: kept with
    the run's results, they let `python -m train.ensemble` average runs whose weights are gone."""
    rows = [[round(float(p), 4) for p in row] for row in test["probabilities"]]
    data = {"classes": classes, "targets": [int(t) for t in test["targets"]], "probabilities": rows}
    write_json(data, path, compact=True)


def format_epoch(row: dict) -> str:
    text = (f"epoch {row['epoch']:3d} [{row['stage']}] train loss {row['train_loss']:.4f} "
            f"acc {row['train_accuracy']:.4f}")
    if "valid_accuracy" in row:
        text += f" | valid loss {row['valid_loss']:.4f} acc {row['valid_accuracy']:.4f}"
    return text + f" | {row['seconds']:.1f}s"


def suggest_lr(lrs: list, losses: list) -> float:
    """LR where the smoothed loss falls fastest (in log-LR), looking only before the loss minimum."""
    lowest = int(np.argmin(losses))
    if lowest < 2:
        return float(lrs[lowest]) / 10
    slopes = np.gradient(np.asarray(losses[:lowest + 1]), np.log10(lrs[:lowest + 1]))
    return float(lrs[int(np.argmin(slopes))])


def confusion_matrix(targets, predictions, n_classes: int) -> np.ndarray:
    """(true, predicted) counts."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(targets), np.asarray(predictions)), 1)
    return matrix
