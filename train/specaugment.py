"""SpecAugment frequency and time masks for (channels, mels, frames) image tensors (the book's transforms).

The book's ``FrequencyMask``/``TimeMask`` with three fixes: each mask picks its start on its own axis
(the book drew the frequency start from the time axis, ``shape[2]``, and the time start from
``shape[1]``), the mask stays inside the image, and ``__repr__`` prints ``Mask(max_width=.., use_mean=..)``
(the book's closed the parenthesis before ``use_mean``). The masking itself is
``torchaudio.functional.mask_along_axis``: one band, the same in every channel, of width drawn
uniformly from ``[0, max_width)``.
"""
from __future__ import annotations

import torch
from torchaudio.functional import mask_along_axis
from torchvision import transforms

FREQ_AXIS = -2
TIME_AXIS = -1


class _AxisMask:
    """Mask one random band along ``axis`` with zero, or with each channel's mean (``use_mean``)."""

    axis: int

    def __init__(self, max_width: int, use_mean: bool = True):
        if int(max_width) < 1:
            raise ValueError(f"max_width must be at least 1, got {max_width}")
        self.max_width = int(max_width)
        self.use_mean = bool(use_mean)

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        axis = tensor.dim() + self.axis
        if not self.use_mean:
            return mask_along_axis(tensor, self.max_width, 0.0, axis)
        # The channels are differently normalised copies of one spectrogram, so the fill is each
        # channel's own mean (one dB level in all three); masking the centred tensor with 0 does that.
        mean = tensor.mean(dim=(-2, -1), keepdim=True)
        return mask_along_axis(tensor - mean, self.max_width, 0.0, axis) + mean

    def __repr__(self) -> str:
        return f"{type(self).__name__}(max_width={self.max_width}, use_mean={self.use_mean})"


class FrequencyMask(_AxisMask):
    """Blank a band of mel bins (rows) over all time steps."""

    axis = FREQ_AXIS


class TimeMask(_AxisMask):
    """Blank a band of frames (columns) over all mel bins."""

    axis = TIME_AXIS


def spec_augment(freq_width: int, time_width: int, p: float = 0.5, use_mean: bool = True) -> transforms.Compose:
    """The book's training augmentation: each mask applied independently with probability ``p``."""
    return transforms.Compose([
        transforms.RandomApply([FrequencyMask(freq_width, use_mean)], p=p),
        transforms.RandomApply([TimeMask(time_width, use_mean)], p=p),
    ])
