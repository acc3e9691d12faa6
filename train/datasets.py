"""Torch datasets over ESC-50 clips: raw waveforms (AudioNet) and log-mel images (MelCNN, ResNet-50)."""
from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from edge.audio import AudioFileError, load_audio
from edge.frontend import audionet_input
from train.data.esc50 import DatasetError


def _load_waveform(clip, sample_rate: int) -> np.ndarray:
    try:
        wave, rate = load_audio(clip.path)
    except AudioFileError as err:
        raise DatasetError(str(err)) from None
    return audionet_input(wave, rate, sample_rate)


class WaveformClips(Dataset):
    """5-s clips resampled to ``sample_rate`` and held in memory; item = ((1, samples) tensor, target).

    ``transform`` (e.g. train.augment.WaveformAugment) is applied to a copy of the tensor on access.
    """

    def __init__(self, clips, sample_rate: int = 8000, transform=None, jobs: int = 4, progress: bool | None = None):
        self.clips = list(clips)
        self.sample_rate = sample_rate
        self.transform = transform
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            waves = list(tqdm(pool.map(lambda c: _load_waveform(c, sample_rate), self.clips),
                              total=len(self.clips), desc=f"loading {len(self.clips)} clips @ {sample_rate} Hz",
                              leave=False, disable=None if progress is None else not progress))
        n = int(round(5.0 * sample_rate))
        self.waves = torch.from_numpy(np.stack(waves)) if waves else torch.empty(0, 1, n)
        self.targets = torch.tensor([c.target for c in self.clips], dtype=torch.long)

    def select(self, keep, transform=None) -> "WaveformClips":
        """The clips for which ``keep(clip)`` is true, sharing the loaded waveforms (no reload)."""
        index = torch.tensor([i for i, c in enumerate(self.clips) if keep(c)], dtype=torch.long)
        subset = copy.copy(self)
        subset.clips = [self.clips[i] for i in index]
        subset.waves, subset.targets = self.waves[index], self.targets[index]
        subset.transform = transform
        return subset

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int):
        wave = self.waves[index]
        if self.transform is not None:
            wave = self.transform(wave.clone())
        return wave, self.targets[index]


class LogMelImages(Dataset):
    """Precomputed log-mel spectrograms (dB) -> normalised CNN images; item = ((channels, n_mels, n_frames),
    target), the front end's image: (2, 64, 216) for MelCNN, (3, 128, 216) for ResNet-50.

    ``log_mels`` is the (N, n_mels, n_frames) array from train.data.cache.load_log_mels (a memmap is
    fine: rows are read on access); ``conditions`` (e.g. train.augment.RecordingConditions) sees the dB
    log-mel, ``transform`` (e.g. SpecAugment) the image tensor made from it.

    With ``clean_view`` each image also holds, after its own channels, the clip's image without
    ``conditions`` (for train.engine.Trainer's ``teacher`` or ``consistency``): ``transform`` sees both stacked, so
    the two views share one crop, shift and mask and differ only in how the clip was recorded.
    """

    def __init__(self, log_mels, targets, frontend, transform=None, conditions=None, clean_view: bool = False):
        if len(log_mels) != len(targets):
            raise ValueError(f"{len(log_mels)} spectrograms but {len(targets)} targets")
        self.log_mels = log_mels
        targets = np.asarray(targets)  # class indices, or (N, classes) distributions (soft targets)
        self.targets = torch.as_tensor(targets, dtype=torch.float32 if targets.ndim == 2 else torch.long)
        self.frontend = frontend
        self.transform = transform
        self.conditions = conditions
        self.clean_view = clean_view

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        clean = np.asarray(self.log_mels[index])
        log_mel = clean if self.conditions is None else self.conditions(clean, index)
        image = torch.from_numpy(self.frontend.image(log_mel))
        if self.clean_view:
            image = torch.cat([image, torch.from_numpy(self.frontend.image(clean))])
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index]
