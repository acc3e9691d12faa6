"""ResNet-50 transfer on log-mel images (the book's SpecResNet), trained in two stages.

Stage 1 trains the new head on a frozen ImageNet backbone; stage 2 unfreezes everything with
discriminative learning rates: one optimizer parameter group per block of layers, the head fastest
and the stem slowest. (The book's ``optim.Adam(params, lr=[1e-2, 1e-4, 1e-8])`` cannot run: Adam takes
one learning rate per *parameter group*, not a list.)
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models import ResNet50_Weights, resnet50

IMAGENET_WEIGHTS = ResNet50_Weights.IMAGENET1K_V2
FEATURES = 2048
HIDDEN = 500

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

    def __init__(self, n_classes: int = 50, weights="imagenet", dropout: float = 0.5):
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
