"""Teachers to distil from: finished runs loaded as one model, either for train.engine.Trainer's ``teacher`` (it
sees every training crop) or for :func:`clip_targets` (each whole clip once, before training)."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from train.data.esc50 import Split, parse_splits
from train.engine import load_best
from train.runs import run_split


class AveragedModels(nn.Module):
    """Several models as one: the log of their mean class probabilities, which softmax turns back into that mean."""

    def __init__(self, models):
        super().__init__()
        self.models = nn.ModuleList(models)

    def probabilities(self, x: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """The mean of the models' probabilities, each softened by ``temperature`` (softmax of logits / T)."""
        return torch.stack([(m(x).float() / temperature).softmax(1) for m in self.models]).mean(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.probabilities(x).clamp_min(1e-12).log()


def load_teacher(run_dirs, build: Callable[[dict], nn.Module], input_spec: dict, classes: list,
                 split: Split) -> nn.Module:
    """The finished runs ``run_dirs`` as one teacher (their probabilities averaged when there are several) for a
    student trained on ``split``; ``build`` makes an untrained network from a checkpoint's ``model_kwargs`` (the
    recipe passes its own: train.models' registry imports the recipes, so using it here would close a circle).

    Each must read the student's input (the same front end) and name the same classes, and none may have
    trained on the student's validation or test folds, or chosen its epoch on the test fold: what it knows of
    those clips would reach the student's selection and test through its probabilities.
    """
    models = []
    for run in run_dirs:
        checkpoint = load_best(run)
        if checkpoint["input"] != input_spec:
            raise ValueError(f"--teacher {run}: its model reads {checkpoint['input']}, not the student's input "
                             f"{input_spec}: a teacher needs the student's front end")
        if list(checkpoint["classes"]) != list(classes):
            raise ValueError(f"--teacher {run}: its classes are not the student's")
        teacher_split = parse_splits(run_split(run))[0]
        seen = set(teacher_split.train_folds) & ({split.test_fold} | set(split.valid_folds))
        seen |= set(teacher_split.valid_folds) & {split.test_fold}
        if seen:
            folds = ", ".join(map(str, sorted(seen)))
            raise ValueError(f"--teacher {run}: it was trained or selected on fold {folds}, "
                             f"which the student ({split.name}) validates or tests on")
        model = build(checkpoint["model_kwargs"])
        model.load_state_dict(checkpoint["state_dict"])
        models.append(model.eval())
    if not models:
        raise ValueError("--teacher needs at least one run folder")
    return models[0] if len(models) == 1 else AveragedModels(models)


@torch.no_grad()
def clip_targets(teacher: nn.Module, clips, weight: float, temperature: float = 1.0,
                 batch_size: int = 64, device: str | torch.device = "cpu") -> np.ndarray:
    """(N, classes) training targets: (1 - ``weight``) * the one-hot labels + ``weight`` * the teacher's
    probabilities of each whole clip of ``clips`` (a dataset of (image, class index), e.g. the training clips'
    LogMelImages without augmentation), softened by ``temperature`` (several teachers: their softened
    probabilities averaged).

    Computed once, so a teacher of any size costs a forward pass per clip, not one per training step
    (EfficientAT stores its teachers' predictions the same way); the student's crops, recording conditions
    and mixing then work on the clip while its target stays the teacher's view of the whole clean clip. The
    teacher runs on ``device`` (the student's), and is left there.
    """
    if not 0.0 <= weight <= 1.0 or temperature <= 0:
        raise ValueError(f"weight must be in [0, 1] and temperature > 0, not {weight!r} and {temperature!r}")
    teachers = (teacher if isinstance(teacher, AveragedModels) else AveragedModels([teacher])).to(device)
    taught, labels = [], []
    for x, y in torch.utils.data.DataLoader(clips, batch_size=batch_size):
        taught.append(teachers.probabilities(x.to(device), temperature).cpu())
        labels.append(F.one_hot(y, taught[-1].shape[1]).float())
    return ((1 - weight) * torch.cat(labels) + weight * torch.cat(taught)).numpy()
