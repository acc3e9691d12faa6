"""AudioNet: the book's raw-waveform CNN (Dai et al. 2016, "Very deep CNNs for raw waveforms"), fixed.

Run ``python -m train.audionet --data DIR`` to train it on ESC-50 (8 kHz, 5-s clips of 40000 samples).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

SAMPLE_RATE = 8000
CLIP_SECONDS = 5.0

# depth -> (first-layer channels, [(channels, conv layers) per stage]), Table 1 of Dai et al.
VARIANTS = {
    5: (128, [(128, 1), (256, 1), (512, 1)]),
    11: (64, [(64, 2), (128, 2), (256, 3), (512, 2)]),
    18: (64, [(64, 4), (128, 4), (256, 4), (512, 4)]),
}


def _conv_block(in_channels: int, out_channels: int, kernel: int, stride: int = 1, padding: int = 0):
    return [nn.Conv1d(in_channels, out_channels, kernel, stride, padding, bias=False),
            nn.BatchNorm1d(out_channels), nn.ReLU(inplace=True)]


class AudioNet(nn.Module):
    """M5/M11/M18 of Dai et al. on (batch, 1, samples) waveforms -> (batch, n_classes) logits.

    depth=5 is the book's network: conv(80, stride 4) with 128 channels, then conv(3) blocks of
    128/256/512 channels, each followed by BatchNorm, ReLU and max-pooling by 4. Differences from the
    book: 50 outputs instead of 10; global average pooling instead of ``AvgPool1d(30)`` (which gives
    one output only by accident of 8 kHz x 5 s input: 38 frames remain); plain logits instead of
    ``log_softmax`` (the book feeds log-probabilities to ``CrossEntropyLoss``, which applies
    log-softmax again); the 3-tap convolutions are zero-padded, and they have no bias (BatchNorm
    follows). depth=11 and 18 are the deeper M11/M18 variants of the paper. The network is fully
    convolutional, so it accepts any clip length.
    """

    def __init__(self, n_classes: int = 50, depth: int = 5):
        super().__init__()
        if depth not in VARIANTS:
            raise ValueError(f"depth must be one of {sorted(VARIANTS)}, not {depth!r}")
        first, stages = VARIANTS[depth]
        layers = _conv_block(1, first, 80, stride=4) + [nn.MaxPool1d(4)]
        channels = first
        for i, (out_channels, n_convs) in enumerate(stages):
            for _ in range(n_convs):
                layers += _conv_block(channels, out_channels, 3, padding=1)
                channels = out_channels
            if i < len(stages) - 1 or depth == 5:
                layers.append(nn.MaxPool1d(4))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels, n_classes)
        self.n_classes, self.depth = n_classes, depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean(dim=-1))
