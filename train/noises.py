"""Steady background noise for training, made as a waveform and heard through the front end, kept as log-mels
that train.augment.RecordingConditions adds under training clips (``--noise-clips``).

Why the waveform: RecordingConditions' own noise is drawn on mel power, one independent Gamma variate per band
and frame. Noise heard through the real front end is not like that: overlapping STFT frames correlate it in time,
overlapping mel filters across bands, and its texture is what a microphone's hiss or a fan delivers. The
image-source rooms (train.rooms) replaced the same kind of mel-power simulation for reverberation and gained
12-13 points in rooms on fold 4; stationary noise at 10 dB SNR is what the shipped model still loses most to.

Each clip is white Gaussian noise, drawn as its spectrum and shaped to a slope of -6..+3 dB per octave (as the
mel-power noise draws it), half of them with a level that wanders by a few dB over a second or so. Drawing it
this way, with the run's seed, keeps it apart from the robustness benchmark's noise (audiomentations' white and
pink generators, its own seed).

Status: an option, not the recipe. On fold 4 it gained 2-7 points in noise at 10 dB and 1.5 clean, and lost 3.75
in the benchmark's larger room (one seed; docs/experiments.md, "Noise made as waveforms").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from edge.frontend import FrontEnd

NOISE_SEED = 53  # mixed with the run's seed, as train.rooms and train.babble do


@dataclass(frozen=True)
class NoiseColours:
    """How the noise clips are drawn."""

    slope_db_per_octave: tuple = (-6.0, 3.0)  # around 1 kHz: brown-ish .. pink (-3) .. white (0) .. blue-ish
    wander_p: float = 0.5  # chance that the level wanders
    wander_db: float = 6.0  # by up to +- this
    wander_period_s: tuple = (0.3, 3.0)


def coloured_noise(rng: np.random.Generator, samples: int, rate: int, colours: NoiseColours = NoiseColours()
                   ) -> np.ndarray:
    """``samples`` of Gaussian noise whose power spectrum has a random slope in dB per octave, float32 at unit RMS."""
    bins = samples // 2 + 1
    spectrum = rng.normal(size=bins) + 1j * rng.normal(size=bins)  # white Gaussian noise, drawn as its spectrum
    frequencies = np.maximum(np.fft.rfftfreq(samples, 1 / rate), 20.0)  # no boost below 20 Hz
    slope = rng.uniform(*colours.slope_db_per_octave)
    x = np.fft.irfft(spectrum * 10 ** (slope * np.log2(frequencies / 1000) / 20), n=samples)
    if rng.uniform() < colours.wander_p:
        t = np.arange(samples) / rate
        period, phase = rng.uniform(*colours.wander_period_s), rng.uniform(0, 2 * np.pi)
        x = x * 10 ** (rng.uniform(0, colours.wander_db) * np.sin(2 * np.pi * t / period + phase) / 20)
    return (x / max(np.sqrt(np.mean(x ** 2)), 1e-12)).astype(np.float32)


def log_mel_bank(frontend: FrontEnd, make: Callable, count: int, seed: int, salt: int) -> np.ndarray:
    """(count, n_mels, n_frames) float32 dB log-mels (as train.data.cache stores them) of ``count`` 5-s sounds,
    each ``make(rng, samples, rate)`` with a generator drawn from ``seed`` and the module's ``salt``."""
    if count < 1:
        raise ValueError(f"count must be positive, not {count}")
    rate, samples = frontend.sample_rate, frontend.clip_samples
    seeds = np.random.SeedSequence([seed, salt]).spawn(count)
    return np.stack([frontend.log_mel(make(np.random.default_rng(s), samples, rate), rate) for s in seeds])


def noise_log_mels(frontend: FrontEnd, count: int, seed: int, colours: NoiseColours = NoiseColours()) -> np.ndarray:
    """(count, n_mels, n_frames) log-mels of ``count`` clips of coloured noise, drawn from ``seed``: a few seconds."""
    return log_mel_bank(frontend, lambda rng, samples, rate: coloured_noise(rng, samples, rate, colours),
                        count, seed, NOISE_SEED)
