"""MelCNN: a compact CNN trained from scratch on the shared front end's log-mel images.

Run ``python -m train.melcnn --data DIR`` to train it on ESC-50. It needs no pretrained weights, which
is why it, not the ImageNet ResNet-50, is the model the edge can ship.

The recipe, after what worked for from-scratch ESC-50 models (PANNs, Kong et al. 2020; EnvNet-v2,
Tokozume et al. 2018): random crops of 2.5 s that contain the sound, the book's SpecAugment masks,
mixup of the log-mel images (as PANNs mixes its log-mel features), a weight average (EMA), long
training, and a test on the whole 5-s window (the network is fully convolutional). Training clips are
also heard as a device might record them (train.augment.RecordingConditions: rooms, noise, microphone
bands), which made the model both more accurate on fold 4 and more robust (docs/experiments.md).
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import Compose

from edge.frontend import COMPRESSIONS, FrontEnd, compression_layers
from edge.metadata import LOG_MEL_IMAGE
from train.data.cache import load_log_mels
from train.data.esc50 import class_names
from train.datasets import LogMelImages
from train.distillation import clip_targets, load_teacher
from train.engine import resolve_device, seed_everything
from train.config import TrainingConfig, add_common_args, check_range, int_list
from train.runs import run_recipe, run_trainer, train_single_stage
from train.augment import SNR_DB, FreqMixStyle, MelSpeedChange, RecordingConditions, TimeShift, build_mix
from train.babble import babble_log_mels
from train.devices import device_log_mels
from train.noises import noise_log_mels
from train.rooms import reverberant_log_mels
from train.specaugment import spec_augment

SAMPLE_RATES = (22050, 44100)
MEL_BANDS = (64, 128)
HOP_LENGTHS = (512, 256)  # samples at 22.05 kHz (23 and 12 ms); scaled with the rate
DB_MEAN_STD = (0.5, 0.25)
PCEN_MEAN_STD = (0.30, 0.44)  # over the PCEN images of the 1200 clips of folds 1-3 (64 bands, 22.05 kHz)
DEREVERB_MEAN_STD = (0.36, 0.27)  # over the dereverberated dB images of the same clips
COMPRESSION = "db+pcen"  # the recipe's image: the dB image and its PCEN as two channels


def melcnn_frontend(sample_rate: int = SAMPLE_RATES[0], mel_bands: int = MEL_BANDS[0],
                    compression: str = COMPRESSION, hop_length: int = HOP_LENGTHS[0]) -> FrontEnd:
    """``mel_bands`` mel bands from 0 Hz to half ``sample_rate``, as two channels (``compression`` "db+pcen"): the dB
    image scaled to [0, 1] (0 = top_db below the window's peak), then centred, and its per-channel energy
    normalisation (PCEN), centred and scaled by its mean and std over ESC-50's training folds. "db" or "pcen"
    give one of them alone; "db+pcen+dereverb" adds the dB image less its late reverberation (edge.frontend).
    The dB image keeps a sound's spectral envelope; PCEN flattens steady backgrounds:
    together they were 1.6 points better on fold 4 than dB alone (docs/experiments.md).

    Window and hop grow with the rate (46 and 23 ms), so every rate gives the same 64 x 216 image of a 5-s
    window and the network costs the same; 44.1 kHz adds the band from 11 to 22 kHz, where clicks, glass
    and cans hold much of their energy, but widens every band below it, and the recipe lost 2 points on fold 4
    with it (docs/experiments.md): the default stays 22.05 kHz. 128 bands double the window (93 ms) and keep
    the hop: a 128 x 216 image, twice the frequency resolution at twice the network's cost. (Doubling the hop
    as well, a 128 x 108 image at the same cost, lost 4 points on fold 4: many classes are trains of short
    events.) ``hop_length`` 256 halves the hop and keeps the window: a 64 x 431 image, twice the time resolution
    (12-ms steps, as PANNs' and AST's 10 ms) at twice the network's cost.
    """
    if sample_rate not in SAMPLE_RATES:
        raise ValueError(f"--sample-rate must be one of {SAMPLE_RATES}, not {sample_rate}")
    if mel_bands not in MEL_BANDS:
        raise ValueError(f"--mel-bands must be one of {MEL_BANDS}, not {mel_bands}")
    if hop_length not in HOP_LENGTHS:
        raise ValueError(f"--hop-length must be one of {HOP_LENGTHS}, not {hop_length}")
    if compression not in COMPRESSIONS:
        raise ValueError(f"--compression must be one of {COMPRESSIONS}, not {compression!r}")
    rate_scale, band_scale = sample_rate // SAMPLE_RATES[0], mel_bands // MEL_BANDS[0]
    norms = {"db": DB_MEAN_STD, "pcen": PCEN_MEAN_STD, "dereverb": DEREVERB_MEAN_STD}
    mean, std = zip(*(norms[layer] for layer in compression_layers(compression)))
    return FrontEnd(sample_rate=sample_rate, n_fft=1024 * rate_scale * band_scale, hop_length=hop_length * rate_scale,
                    fmax=sample_rate / 2, n_mels=mel_bands, channels=len(mean), mean=mean, std=std,
                    compression=compression)


FRONTEND = melcnn_frontend()
POOLINGS = ("mean", "mean+max", "mean+attention")
# The recipe's network, the defaults of both MelCNN and MelCNNConfig.
WIDTHS, DROPOUT, POOLING = (24, 48, 96, 192), 0.3, "mean+max"
STEM_POOLS = (2, 4)


@dataclass(frozen=True)
class MelCNNConfig(TrainingConfig):
    """The MelCNN recipe; its defaults are the settings of the run behind the README's numbers."""

    MIXES = ("mixup", "between-class", "time-cutmix", "none")
    TEACHER_VIEWS = ("crop", "clip")

    sample_rate: int = SAMPLE_RATES[0]  # of the front end (melcnn_frontend)
    mel_bands: int = MEL_BANDS[0]
    hop_length: int = HOP_LENGTHS[0]  # samples at 22.05 kHz
    compression: str = COMPRESSION  # of the mel power: "db", "pcen", both as two channels, or a third (melcnn_frontend)
    epochs: int = 150
    lr: float = 3e-3
    mix: str = "mixup"
    mixup_alpha: float = 1.0  # Beta(1, 1): a uniform share, as between-class learning draws it
    ema: float = 0.999
    widths: tuple = WIDTHS
    dropout: float = DROPOUT
    pooling: str = POOLING
    residual: bool = False  # a shortcut around each stage's two convolutions (MelCNN)
    sub_bands: int = 1  # frequency groups each BatchNorm normalises on its own (MelCNN's SubSpectralNorm); 1 = off
    stem_pool: int = 2  # bands the first stage's pooling merges into one (MelCNN); 4 with 128 bands: a 64-band trunk
    frequency_position: bool = False  # a channel telling the network which band it looks at (MelCNN)
    freq_mixstyle: float = 0.0  # probability per batch of Freq-MixStyle (train.augment.FreqMixStyle); 0 = off
    speed: float = 1.0  # training clips played at a speed in [1 / speed, speed]; 1 = off
    shift: bool = False  # roll each training image in time before the crop, as the listener's windows fall
    crop_seconds: float = 2.5
    specaugment: bool = True
    specaugment_p: float = 0.5
    freq_mask: int = 8  # of 64 mel bins
    time_mask: int = 24  # of the 108 frames of a 2.5-s crop
    conditions: float = 0.333  # each simulated recording condition on a third of the training clips
    room_drr_db: tuple = (-3.0, 12.0)  # direct-to-reverberant ratios of the simulated rooms
    background_clips: bool = False  # other training clips as backgrounds, one more recording condition
    room_copies: int = 0  # copies of each training clip in image-source rooms (train.rooms); 0 = rooms on mel power
    room_bank: int = 48  # rooms those copies are drawn from
    device_copies: int = 0  # copies of each training clip clipped or through a codec (train.devices); 0 = none
    babble: int = 0  # clips of synthetic speech babble (train.babble), one more recording condition; 0 = none
    noise_clips: int = 0  # clips of noise heard through the front end (train.noises); 0 = noise on mel power
    teacher: tuple = ()  # finished runs to distil from (train.engine.Trainer's teacher); () = none
    teacher_weight: float = 0.5  # of the teacher's probabilities in the target, against the labels
    teacher_views: str = "crop"  # the teacher sees each training crop ("crop") or each whole clip once ("clip")
    teacher_temperature: float = 1.0  # softens the teacher's probabilities (with teacher_views "clip")
    consistency: float = 0.0  # weight of the Jensen-Shannon consistency of recorded and clean views; 0 = off
    cache_dir: str | None = None

    def __post_init__(self):
        super().__post_init__()
        frontend = self.frontend()  # refuses what it has no front end for
        check_range("--speed", self.speed, 1)
        check_range("--freq-mask", self.freq_mask, 1)
        check_range("--time-mask", self.time_mask, 1)
        if self.stem_pool not in STEM_POOLS:
            raise ValueError(f"--stem-pool must be one of {STEM_POOLS}, not {self.stem_pool}")
        # bins of the last stage's convolutions: the first stage pools stem_pool bands into one, every later one 2
        smallest_bins = self.mel_bands / (self.stem_pool * 2 ** (len(self.widths) - 2) if len(self.widths) > 1 else 1)
        if smallest_bins / (2 if len(self.widths) > 1 else self.stem_pool) < 1:  # the last stage pools them too
            raise ValueError(f"--widths: {len(self.widths)} stages pool {self.mel_bands} mel bands to less than a bin")
        crop_frames = round(self.crop_seconds * frontend.sample_rate / frontend.hop_length)
        if self.crop_seconds and crop_frames < 2 ** len(self.widths):  # every stage halves the frames
            raise ValueError(f"--crop-seconds {self.crop_seconds:g} gives {crop_frames} frames, fewer than the "
                             f"{2 ** len(self.widths)} that {len(self.widths)} stages pool into one")
        if self.sub_bands < 1 or (self.sub_bands > 1 and self.residual) or smallest_bins % self.sub_bands:
            raise ValueError(f"--sub-bands must be >= 1, divide every stage's frequency bins (the last stage has "
                             f"{smallest_bins:g}) and be 1 with --residual, not {self.sub_bands}")
        check_range("--freq-mixstyle", self.freq_mixstyle, 0, 1)
        check_range("--crop-seconds", self.crop_seconds, 0)
        check_range("--specaugment-p", self.specaugment_p, 0, 1)
        check_range("--conditions", self.conditions, 0, 1)
        if len(self.room_drr_db) != 2 or self.room_drr_db[0] > self.room_drr_db[1]:
            raise ValueError(f"--room-drr-db must be LOW,HIGH with LOW <= HIGH, not {self.room_drr_db}")
        if self.background_clips and not self.conditions:
            raise ValueError("--background-clips is one of the recording conditions: it needs --conditions > 0")
        check_range("--room-copies", self.room_copies, 0)
        check_range("--babble", self.babble, 0)
        check_range("--noise-clips", self.noise_clips, 0)
        check_range("--room-bank", self.room_bank, 1)
        check_range("--device-copies", self.device_copies, 0)
        for flag, value in (("--room-copies", self.room_copies), ("--babble", self.babble),
                            ("--noise-clips", self.noise_clips), ("--device-copies", self.device_copies)):
            if value and not self.conditions:
                raise ValueError(f"{flag} is one of the recording conditions: it needs --conditions > 0")
        object.__setattr__(self, "teacher", tuple(self.teacher))  # argparse's nargs="+" gives a list
        check_range("--teacher-weight", self.teacher_weight, 0, 1)
        if self.teacher_views not in self.TEACHER_VIEWS:
            raise ValueError(f"--teacher-views must be one of {', '.join(self.TEACHER_VIEWS)}, "
                             f"not {self.teacher_views!r}")
        if self.teacher_temperature <= 0 or (self.teacher_temperature != 1 and self.teacher_views != "clip"):
            raise ValueError(f"--teacher-temperature must be > 0, and other than 1 only with --teacher-views clip, "
                             f"not {self.teacher_temperature}")
        check_range("--consistency", self.consistency, 0)
        if self.consistency and not self.conditions:
            raise ValueError("--consistency compares a clip recorded under the recording conditions with the clean "
                             "clip: it needs --conditions > 0")
        if compression_layers(self.compression) != ("db",) and self.mix == "between-class":
            raise ValueError(f"--compression {self.compression} needs --mix mixup or none: between-class mixing adds "
                             "the sounds as mel power, which it reads back from a dB image")
        if (self.teacher or self.consistency) and self.mix == "between-class":
            raise ValueError("--teacher and --consistency need --mix mixup or none: between-class mixing on mel power "
                             "mixes one view, not the recorded and the clean one alike")

    def frontend(self) -> FrontEnd:
        """The front end these settings train on (melcnn_frontend)."""
        return melcnn_frontend(self.sample_rate, self.mel_bands, self.compression, self.hop_length)


class SubSpectralNorm(nn.Module):
    """BatchNorm with statistics and scale of their own for each of ``sub_bands`` equal groups of frequency bins
    (Chang et al. 2021; BC-ResNet): a low band's activations then need not share the mean and spread of a high
    band's, which a convolution that cannot tell the bands apart would otherwise have to live with. It also takes
    away the level of one band against another, and it cost the recipe 2.4 points on fold 4 (docs/experiments.md)."""

    def __init__(self, channels: int, sub_bands: int):
        super().__init__()
        self.sub_bands = sub_bands
        self.norm = nn.BatchNorm2d(channels * sub_bands)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, bins, frames = x.shape
        if bins % self.sub_bands:
            raise ValueError(f"{bins} frequency bins do not split into {self.sub_bands} equal sub-bands")
        grouped = x.reshape(batch, channels * self.sub_bands, bins // self.sub_bands, frames)
        return self.norm(grouped).reshape(batch, channels, bins, frames)


def _norm(channels: int, sub_bands: int = 1) -> nn.Module:
    return nn.BatchNorm2d(channels) if sub_bands == 1 else SubSpectralNorm(channels, sub_bands)


def _conv_bn_relu(in_channels: int, out_channels: int, sub_bands: int = 1) -> list:
    return [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), _norm(out_channels, sub_bands),
            nn.ReLU(inplace=True)]


class ResidualPair(nn.Module):
    """Two 3x3 convolutions with a shortcut around them (He et al. 2016's basic block; PANNs' ResNet38): the
    shortcut is a 1x1 convolution where the width changes."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.body = nn.Sequential(*_conv_bn_relu(in_channels, out_channels),
                                  nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(out_channels))
        self.shortcut = nn.Identity() if in_channels == out_channels else nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class MelCNN(nn.Module):
    """VGG-style CNN on (batch, channels, n_mels, frames) log-mel images -> (batch, n_classes) logits; the recipe's
    two channels are the dB and the PCEN image (melcnn_frontend).

    Each stage is two 3x3 convolutions (BatchNorm, ReLU) and 2x2 average pooling, as in PANNs' CNN6-14
    but narrower, so that a run fits in an hour on two CPU cores. The last feature map is averaged over
    frequency, then summarised over time by ``pooling``: "mean+max" (PANNs) lets a short event count for
    more than its share of the frames. "mean+attention" replaces the loudest frame by a learned weighting of the
    frames, per channel (a 1x1 convolution scores each frame, softmax over time; PANNs' attention pooling,
    attentive statistics pooling in speaker recognition): reverberation smears a sound's loudest frames into the
    ones after them, and a weighting can learn to prefer the onsets. Any number of frames works, so the net
    trains on crops and is tested on whole windows.

    Convolutions do not know which band they look at (only the zero padding at the edges tells them);
    ``frequency_position`` adds a channel that holds each band's place from -1 (lowest) to 1 (highest), as
    frequency-aware CNNs do (Koutini et al. 2019), so that the same shape can mean different sounds low and high.
    It stayed within the recipe's seeds on fold 4, so it is off by default (docs/experiments.md). ``stem_pool`` 4
    pools the first stage's output 4 x 2 (frequency x time) instead of 2 x 2: on a 128-band image the first stage
    sees twice the frequency resolution and every later stage the 64-band network's shapes, at 1.2 times its MACs
    (128 bands throughout: twice); it led the recipe's seeds on fold 4 by 0.7 points (fold 5: level). It is off by
    default because the defaults train what the edge ships, 64 bands. ``residual`` adds a
    shortcut around each stage's two convolutions (ResidualPair: level with the recipe on fold 4); ``sub_bands`` > 1
    normalises each of that many groups of bins on its own (SubSpectralNorm: 2.4 points under it).
    """

    def __init__(self, n_classes: int = 50, widths: tuple = WIDTHS, dropout: float = DROPOUT,
                 pooling: str = POOLING, in_channels: int = FRONTEND.channels, frequency_position: bool = False,
                 residual: bool = False, sub_bands: int = 1, stem_pool: int = 2):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, not {pooling!r}")
        if not widths or any(int(w) < 1 for w in widths):
            raise ValueError(f"widths must be positive channel counts, not {widths!r}")
        if sub_bands < 1 or (sub_bands > 1 and residual):
            raise ValueError(f"sub_bands must be >= 1, and 1 with residual stages, not {sub_bands}")
        self.frequency_position = frequency_position
        layers, channels = [], in_channels + int(frequency_position)
        if stem_pool not in STEM_POOLS:
            raise ValueError(f"stem_pool must be one of {STEM_POOLS}, not {stem_pool!r}")
        for stage, width in enumerate(widths):
            pool = nn.AvgPool2d((stem_pool, 2) if stage == 0 else 2)
            if residual:
                layers += [ResidualPair(channels, width), pool]
            else:
                layers += _conv_bn_relu(channels, width, sub_bands) + _conv_bn_relu(width, width, sub_bands) + [pool]
            channels = width
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(channels, n_classes)
        self.pooling = pooling
        self.frame_scores = nn.Conv1d(channels, channels, 1) if pooling == "mean+attention" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.frequency_position:
            bands = torch.linspace(-1.0, 1.0, x.shape[2], dtype=x.dtype, device=x.device)
            x = torch.cat([x, bands.view(1, 1, -1, 1).expand(x.shape[0], 1, -1, x.shape[3])], dim=1)
        features = self.features(x).mean(dim=2)  # (batch, channels, frames)
        pooled = features.mean(dim=-1)
        if self.pooling == "mean+max":
            pooled = pooled + features.amax(dim=-1)
        elif self.pooling == "mean+attention":
            pooled = pooled + (self.frame_scores(features).softmax(dim=-1) * features).sum(dim=-1)
        return self.classifier(self.dropout(pooled))


class RandomTimeCrop:
    """Cut ``frames`` consecutive frames that contain the sound from a (channels, mels, frames) image.

    The start is drawn among the windows holding a frame whose loudest bin is within ``within_db`` of the
    image's loudest (the log-mel counterpart of train.augment.RandomCrop), so that short events padded
    with silence never give a crop of silence alone (in the first channel, dB unless the image is PCEN alone,
    which has no dB scale: there a frame holds the sound when its loudest bin is in the upper three quarters of
    the range of the frames' loudest bins).
    Shorter images are padded with their minimum.
    """

    def __init__(self, frames: int, frontend: FrontEnd, within_db: float = 14.0):
        self.frames, self.within_db = int(frames), float(within_db)
        self.unit = None if frontend.layers[0] != "db" else 1.0 / (frontend.top_db * frontend.std[0])  # per dB

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        n = image.shape[-1]
        if n <= self.frames:
            return F.pad(image, (0, self.frames - n), value=float(image.min()))
        frame_peak = image[0].amax(dim=0)
        if self.unit is None:
            loud = frame_peak >= frame_peak.min() + 0.25 * (frame_peak.max() - frame_peak.min())
        else:
            loud = frame_peak >= frame_peak.max() - self.within_db * self.unit
        loud_before = F.pad(loud.cumsum(0), (1, 0))
        starts = torch.nonzero(loud_before[self.frames:] > loud_before[:n - self.frames + 1]).flatten()
        start = int(starts[torch.randint(0, len(starts), ())])
        return image[..., start:start + self.frames]

    def __repr__(self) -> str:
        return f"RandomTimeCrop({self.frames}, within_db={self.within_db:g})"


def build_augment(config: MelCNNConfig, frontend: FrontEnd):
    """Speed change, time shift, crop, then the book's SpecAugment masks; None when all are off."""
    chain = [MelSpeedChange(frontend, config.speed)] if config.speed > 1 else []
    if config.shift:
        chain.append(TimeShift())
    if config.crop_seconds:
        chain.append(RandomTimeCrop(round(config.crop_seconds * frontend.sample_rate / frontend.hop_length), frontend))
    if config.specaugment:
        chain.append(spec_augment(config.freq_mask, config.time_mask, p=config.specaugment_p))
    return Compose(chain) if len(chain) > 1 else (chain[0] if chain else None)


def widths_arg(text: str) -> tuple:
    return int_list(text, "positive channel counts", low=1)


def db_range_arg(text: str) -> tuple:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be LOW,HIGH in dB, not {text!r}") from None
    return low, high


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m train.melcnn", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Train MelCNN (log-mel images, from scratch) on ESC-50. The defaults reproduce the README numbers.")
    d = MelCNNConfig()
    add_common_args(parser, d)
    snr_range = f"{SNR_DB[0]:g}-{SNR_DB[1]:g} dB"
    group = parser.add_argument_group("MelCNN")
    group.add_argument("--sample-rate", type=int, choices=SAMPLE_RATES, default=d.sample_rate,
                       help="rate of the log-mel front end; 44100 keeps the 64 x 216 image and adds the 11-22 kHz band")
    group.add_argument("--mel-bands", type=int, choices=MEL_BANDS, default=d.mel_bands,
                       help="mel bands of the front end; 128 doubles the window and keeps the hop (a 128 x 216 image, "
                            "twice the cost): scale --freq-mask with it")
    group.add_argument("--hop-length", type=int, choices=HOP_LENGTHS, default=d.hop_length,
                       help="hop of the front end in samples at 22.05 kHz; 256 keeps the window (a 64 x 431 image, "
                            "twice the time resolution and the cost): scale --time-mask with it")
    group.add_argument("--compression", choices=COMPRESSIONS, default=d.compression,
                       help="the image of the mel power: dB below the window's peak, per-channel energy normalisation "
                            "(PCEN: steady backgrounds flattened), both as two channels, or a third: the dB image "
                            "less its late reverberation (an ablation, not adopted: docs/experiments.md); stored in "
                            "the exported model's front end, so the edge computes the same")
    group.add_argument("--widths", type=widths_arg, default=d.widths, metavar="C1,C2,...",
                       help="channels of each stage")
    group.add_argument("--dropout", type=float, default=d.dropout)
    group.add_argument("--pooling", choices=POOLINGS, default=d.pooling)
    group.add_argument("--residual", action=argparse.BooleanOptionalAction, default=d.residual,
                       help="a shortcut around each stage's two convolutions (a ResNet's basic block)")
    group.add_argument("--sub-bands", type=int, default=d.sub_bands, metavar="S",
                       help="normalise each of S equal groups of frequency bins with statistics of their own "
                            "(sub-spectral normalisation; 1 = BatchNorm); the bins of every stage must divide by S")
    group.add_argument("--stem-pool", type=int, choices=STEM_POOLS, default=d.stem_pool,
                       help="bands the first stage's pooling merges into one; 4 with --mel-bands 128 gives the first "
                            "stage the fine bands and every later stage the 64-band network's shapes (1.2x the MACs)")
    group.add_argument("--frequency-position", action=argparse.BooleanOptionalAction, default=d.frequency_position,
                       help="give the network a channel holding each mel band's place (a frequency-aware CNN)")
    group.add_argument("--freq-mixstyle", type=float, default=d.freq_mixstyle, metavar="P",
                       help="with probability P per batch, give each training image the per-band statistics of a "
                            "mixture of itself and another image (Freq-MixStyle: other recordings' colouring; 0 = off)")
    group.add_argument("--speed", type=float, default=d.speed, metavar="MAX",
                       help="play training clips at a speed log-uniform in [1/MAX, MAX], pitch and tempo together "
                            "(train.augment.MelSpeedChange, EnvNet-v2's scale augmentation; 1 = off)")
    group.add_argument("--shift", action=argparse.BooleanOptionalAction, default=d.shift,
                       help="roll each training clip's log-mel by up to half its length before the crop, so that a "
                            "sound can start late in a crop, after what the clip ends with (AudioNet's TimeShift): "
                            "the listener's windows cut sounds anywhere")
    group.add_argument("--crop-seconds", type=float, default=d.crop_seconds,
                       help="train on random crops of this length that contain the sound (0 = whole clips)")
    group.add_argument("--specaugment", action=argparse.BooleanOptionalAction, default=d.specaugment,
                       help="the book's frequency and time masks on training crops")
    group.add_argument("--specaugment-p", type=float, default=d.specaugment_p, help="probability of each mask")
    group.add_argument("--freq-mask", type=int, default=d.freq_mask, help="maximum frequency-mask width (mel bins)")
    group.add_argument("--time-mask", type=int, default=d.time_mask, help="maximum time-mask width (frames)")
    group.add_argument("--conditions", type=float, default=d.conditions, metavar="P",
                       help="simulate recording conditions on training clips: reverberation, noise and a "
                            "microphone's band, each with probability P (train.augment.RecordingConditions; 0 = off)")
    group.add_argument("--room-drr-db", type=db_range_arg, default=d.room_drr_db, metavar="LOW,HIGH",
                       help="direct-to-reverberant ratios of the simulated rooms (dB; lower = farther from the source; "
                            "write --room-drr-db=-15,10 when LOW is negative)")
    group.add_argument("--background-clips", action=argparse.BooleanOptionalAction, default=d.background_clips,
                       help=f"with probability P, another training clip in the background at {snr_range} SNR, "
                            "label unchanged")
    group.add_argument("--room-copies", type=int, default=d.room_copies, metavar="K",
                       help="hear each training clip in K image-source rooms (convolved once, before training) "
                            "instead of reverberation simulated on mel power (0)")
    group.add_argument("--room-bank", type=int, default=d.room_bank, metavar="R",
                       help="the image-source rooms of --room-copies are drawn from R random rooms")
    group.add_argument("--device-copies", type=int, default=d.device_copies, metavar="K",
                       help="with probability P, a training clip not heard in a room is one of K copies made before "
                            "training: clipped at full scale, through a low-bit-rate Vorbis or Opus codec, or both "
                            "(train.devices; 0 = off)")
    group.add_argument("--babble", type=int, default=d.babble, metavar="N",
                       help=f"with probability P, one of N 5-s clips of synthetic speech babble (train.babble) in the "
                            f"background at {snr_range} SNR, label unchanged (0 = off)")
    group.add_argument("--noise-clips", type=int, default=d.noise_clips, metavar="N",
                       help="the background noise condition draws from N 5-s clips of coloured noise made as "
                            "waveforms and heard through the front end (train.noises) instead of noise simulated on "
                            "mel power (0)")
    group.add_argument("--teacher", nargs="+", default=d.teacher, metavar="RUN",
                       help="distil from these finished MelCNN runs (their probabilities averaged): each sees the "
                            "training crop the student sees, mixed alike, but without the recording conditions; "
                            "none may have trained on the folds this run validates or tests on")
    group.add_argument("--teacher-weight", type=float, default=d.teacher_weight, metavar="W",
                       help="the target is (1 - W) * labels + W * the teacher's probabilities")
    group.add_argument("--teacher-views", choices=d.TEACHER_VIEWS, default=d.teacher_views,
                       help="crop: the teacher sees every training crop (a forward pass per step); clip: it sees each "
                            "whole clean training clip once, before training, so a large teacher costs no training "
                            "time (train.distillation.clip_targets)")
    group.add_argument("--teacher-temperature", type=float, default=d.teacher_temperature, metavar="T",
                       help="with --teacher-views clip: the teacher's probabilities are softmax(logits / T)")
    group.add_argument("--consistency", type=float, default=d.consistency, metavar="W",
                       help="add W times the Jensen-Shannon divergence between the model's predictions on each "
                            "training crop as recorded and as the clean clip (AugMix's consistency loss; 0 = off)")
    group.add_argument("--cache-dir", default=d.cache_dir, help="log-mel cache folder (default <dataset>/cache)")
    return parser


def train_run(config: MelCNNConfig, run, log_mels, clips, frontend: FrontEnd) -> dict:
    """Train and test one (split, seed) run; returns its metrics."""
    run.create()
    seed_everything(run.seed)
    split = run.split
    targets = np.array([c.target for c in clips])

    def rows(folds) -> list:
        return [i for i, c in enumerate(clips) if c.fold in folds]

    def images(rows, transform=None, clean_view=False, row_targets=None):
        row_targets = targets[rows] if row_targets is None else row_targets
        return LogMelImages(log_mels[rows], row_targets, frontend, transform, clean_view=clean_view)

    augment = build_augment(config, frontend)
    mix = build_mix(config, frontend=frontend)
    restyle = FreqMixStyle(config.freq_mixstyle) if config.freq_mixstyle else None
    model_kwargs = {"n_classes": len(class_names(clips)), "widths": list(config.widths), "dropout": config.dropout,
                    "pooling": config.pooling, "in_channels": frontend.channels,
                    "frequency_position": config.frequency_position, "residual": config.residual,
                    "sub_bands": config.sub_bands, "stem_pool": config.stem_pool}
    model = MelCNN(**model_kwargs)
    input_spec = {"kind": LOG_MEL_IMAGE, "sample_rate": frontend.sample_rate,
                  "clip_seconds": frontend.clip_seconds, "frontend": frontend.to_json()}
    teacher = (load_teacher(config.teacher, lambda kwargs: MelCNN(**kwargs), input_spec, class_names(clips), split)
               if config.teacher else None)
    train_rows = rows(split.train_folds)
    train_targets = None
    if teacher is not None and config.teacher_views == "clip":
        started = time.perf_counter()
        train_targets = clip_targets(teacher, images(train_rows), config.teacher_weight, config.teacher_temperature,
                                     device=resolve_device(config.device))
        print(f"the teacher's probabilities of {len(train_rows)} training clips in "
              f"{time.perf_counter() - started:.0f} s")
        teacher = None  # the targets hold what it taught
    train_set = images(train_rows, augment, clean_view=teacher is not None or config.consistency > 0,
                       row_targets=train_targets)
    if config.conditions:
        paths = [clips[i].path for i in train_rows]  # the rows of the rooms' and devices' copies are the training set's
        rooms = None
        if config.room_copies:
            started = time.perf_counter()
            rooms = reverberant_log_mels(paths, frontend, config.room_copies, run.seed, bank=config.room_bank,
                                         progress=not config.no_progress)
            print(f"{len(paths)} training clips heard in {config.room_copies} of {config.room_bank} rooms each "
                  f"in {time.perf_counter() - started:.0f} s")
        devices = None
        if config.device_copies:
            started = time.perf_counter()
            devices = device_log_mels(paths, frontend, config.device_copies, run.seed, progress=not config.no_progress)
            print(f"{len(paths)} training clips from {config.device_copies} devices each "
                  f"in {time.perf_counter() - started:.0f} s")
        babble = None
        if config.babble:
            started = time.perf_counter()
            babble = babble_log_mels(frontend, config.babble, run.seed)
            print(f"{config.babble} clips of synthetic babble in {time.perf_counter() - started:.0f} s")
        noises = noise_log_mels(frontend, config.noise_clips, run.seed) if config.noise_clips else None
        train_set.conditions = RecordingConditions(frontend, p=config.conditions, drr_db=config.room_drr_db,
                                                   backgrounds=train_set.log_mels if config.background_clips else None,
                                                   babble=babble, rooms=rooms, noises=noises, devices=devices)
    datasets = (train_set, images(rows(split.valid_folds)) if split.valid_folds else None,
                images(rows((split.test_fold,))))
    trainer = run_trainer(config, run, model, name="melcnn", model_kwargs=model_kwargs, classes=class_names(clips),
                          input_spec=input_spec, datasets=datasets, augment=augment, mix=mix, restyle=restyle,
                          teacher=teacher,
                          teacher_weight=config.teacher_weight, consistency=config.consistency)
    return train_single_stage(trainer, model, config, run)


def train_all(config: MelCNNConfig, plan: list) -> list:
    frontend = config.frontend()
    log_mels, clips = load_log_mels(config.data, frontend, config.cache_dir, progress=not config.no_progress)
    # an ndarray over the cache's read-only memory map (no copy; its slices are plain arrays, not memmaps): dB,
    # 2000 x 64 x 216 floats (110 MB; twice at hop 256), paged in once and shared by the runs
    log_mels = np.ascontiguousarray(log_mels)
    return [train_run(config, run, log_mels, clips, frontend) for run in plan]


def main(argv=None) -> int:
    return run_recipe(MelCNNConfig, build_parser().parse_args(argv), "melcnn", train_all)


if __name__ == "__main__":
    sys.exit(main())
