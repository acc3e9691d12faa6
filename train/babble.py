"""Speech babble for training: several synthetic talkers at once, kept as log-mels that
train.augment.RecordingConditions adds under training clips.

Why: speech is no ESC-50 class, so nothing in the training folds sounds like people talking nearby, and
the robustness benchmark's babble at 10 dB SNR costs the MelCNN recipe 34-38 points on fold 4, its worst
condition. Other training clips as backgrounds did not move it (docs/experiments.md): what the model has
to learn to ignore is speech's own structure, a harmonic voice whose resonances move syllable by syllable.

The talkers come from a small formant synthesiser written here (Rosenberg glottal pulses with pitch glides and
jitter through a cascade of five gliding formant resonators; fricatives, stops and pauses between syllables),
drawn from the run's seed.
The benchmark's babble is espeak-ng's, so the benchmark still measures speech the model never heard.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.frontend import FrontEnd
from train.noises import log_mel_bank

BABBLE_SEED = 47  # mixed with the run's seed, as train.rooms does


@dataclass(frozen=True)
class Talkers:
    """How the synthetic talkers are drawn."""

    count: tuple = (2, 8)  # talkers at once, inclusive
    f0_hz: tuple = (85.0, 255.0)  # a talker's mean pitch, log-uniform: low male to child
    tract_scale: tuple = (0.85, 1.2)  # formant frequencies scaled: long vocal tracts to short
    syllable_s: tuple = (0.06, 0.22)  # voiced part of a syllable: four to eight a second, as people talk
    pause_p: float = 0.12  # chance of a pause of 0.1-0.6 s after a syllable
    fricative_p: float = 0.3  # chance that a syllable starts with a fricative (s, sh, f)
    stop_p: float = 0.35  # chance that it starts with a stop (a closure, then a burst: p, t, k)
    level_db: float = 6.0  # the talkers' levels spread by +- this


def _unit_rms(x: np.ndarray) -> np.ndarray:
    return x / max(np.sqrt(np.mean(x ** 2)), 1e-12)


def resonator(frequency: float, bandwidth: float, rate: int) -> tuple:
    """(b, a) of a two-pole resonance with unit gain at 0 Hz (Klatt's cascade formant synthesiser)."""
    r = np.exp(-np.pi * bandwidth / rate)
    a = np.array([1.0, -2 * r * np.cos(2 * np.pi * frequency / rate), r * r])
    return np.array([a.sum()]), a


def glottal_flow(phase: np.ndarray, opening: float = 0.4, closing: float = 0.16) -> np.ndarray:
    """Rosenberg's glottal pulse at each ``phase`` (in periods): the folds open over ``opening`` of the period,
    close over ``closing``, and stay shut for the rest. Its spectrum falls by 12 dB per octave: a voice, not
    the buzz of a sawtooth."""
    p = phase % 1.0
    rising = 0.5 * (1 - np.cos(np.pi * np.minimum(p, opening) / opening))
    falling = np.cos(0.5 * np.pi * np.clip(p - opening, 0, closing) / closing)
    return np.where(p < opening, rising, np.where(p < opening + closing, falling, 0.0))


def _vowel(rng: np.random.Generator, n: int, f0: float, scale: float, rate: int, block: int = 220) -> np.ndarray:
    """``n`` samples of a voiced syllable at unit RMS: a pitch glide with jitter through five formants that
    move from a consonant's locus to a random vowel over the first part of the syllable (filtered in blocks
    of ``block`` samples while they move)."""
    from scipy.signal import lfilter
    from scipy.signal.windows import tukey

    f_start, f_end = f0 * 2 ** rng.normal(0, 0.15, size=2)
    knots = np.arange(0, n + 40, 40)  # pitch wanders by about 2 % every 2 ms
    jitter = 1 + 0.02 * np.interp(np.arange(n), knots, rng.normal(size=len(knots)))
    flow = glottal_flow(rng.uniform() + np.cumsum(np.linspace(f_start, f_end, n) * jitter) / rate)
    flow = flow + 0.1 * flow * rng.normal(size=n)  # breath, loudest while the folds are open
    voice = np.diff(flow, prepend=flow[0])  # the lips radiate the flow's derivative (+6 dB per octave)
    f1 = rng.uniform(250, 850)
    f2 = rng.uniform(max(f1 + 250, 700), 2500)
    f3 = rng.uniform(max(f2 + 300, 2200), 3400)
    vowel = np.array([f1, f2, f3, rng.uniform(3500, 4300), rng.uniform(4500, 5500)]) * scale
    locus = vowel * 2 ** rng.normal(0, 0.3, size=5)
    bandwidths = (70, 100, 150, 250, 300)
    glide = max(1, int(n * rng.uniform(0.2, 0.6)))
    states = [np.zeros(2) for _ in bandwidths]
    out = np.empty(n)
    starts = list(range(0, glide, block)) + [glide, n]  # the vowel itself is one piece
    for start, stop in zip(starts[:-1], starts[1:]):
        progress = min(start / glide, 1.0)
        piece = voice[start:stop]
        for k, (frequency, bandwidth) in enumerate(zip(locus + (vowel - locus) * progress, bandwidths)):
            piece, states[k] = lfilter(*resonator(min(frequency, 0.45 * rate), bandwidth, rate), piece, zi=states[k])
        out[start:stop] = piece
    return _unit_rms(out * tukey(n, 0.5))


def _hiss(rng: np.random.Generator, n: int, rate: int) -> np.ndarray:
    """``n`` samples of hiss in a random high band: a fricative (s, sh, f), or a stop's burst when short."""
    from scipy.signal import butter, sosfilt
    from scipy.signal.windows import tukey

    low = rng.uniform(1500, 5000)
    high = min(low * rng.uniform(1.5, 3.0), 0.45 * rate)
    return sosfilt(butter(2, (low, high), "bandpass", fs=rate, output="sos"), rng.normal(size=n)) * tukey(n, 0.5)


def talker(rng: np.random.Generator, samples: int, rate: int, talkers: Talkers = Talkers()) -> np.ndarray:
    """One synthetic voice talking for ``samples`` samples, at unit RMS."""
    f0 = np.exp(rng.uniform(*np.log(talkers.f0_hz)))
    scale = rng.uniform(*talkers.tract_scale)
    parts = [np.zeros(int(rng.uniform(0, 0.5) * rate))]  # talkers do not start together
    while sum(len(p) for p in parts) < samples:
        if rng.uniform() < talkers.fricative_p:
            hiss = _hiss(rng, int(rng.uniform(0.03, 0.12) * rate), rate)
            parts.append(hiss * 10 ** (rng.uniform(-15, -3) / 20))
        elif rng.uniform() < talkers.stop_p:
            burst = _hiss(rng, int(rng.uniform(0.005, 0.02) * rate), rate)
            parts += [np.zeros(int(rng.uniform(0.02, 0.07) * rate)), burst * 10 ** (rng.uniform(-10, 0) / 20)]
        stress = 10 ** (rng.uniform(-8, 0) / 20)
        parts.append(stress * _vowel(rng, int(rng.uniform(*talkers.syllable_s) * rate), f0, scale, rate))
        if rng.uniform() < talkers.pause_p:
            parts.append(np.zeros(int(rng.uniform(0.1, 0.6) * rate)))
    return _unit_rms(np.concatenate(parts)[:samples])


def babble(rng: np.random.Generator, samples: int, rate: int, talkers: Talkers = Talkers()) -> np.ndarray:
    """Several talkers at once at spread levels, float32 with a peak of 0.5."""
    count = int(rng.integers(talkers.count[0], talkers.count[1] + 1))
    mix = sum(talker(rng, samples, rate, talkers) * 10 ** (rng.uniform(-1, 1) * talkers.level_db / 20)
              for _ in range(count))
    return (0.5 * mix / max(np.abs(mix).max(), 1e-12)).astype(np.float32)


def babble_log_mels(frontend: FrontEnd, count: int, seed: int, talkers: Talkers = Talkers()) -> np.ndarray:
    """(count, n_mels, n_frames) float32 dB log-mels (as train.data.cache stores them) of ``count`` clips of
    babble, drawn from ``seed``: about 20 s for 64 clips."""
    return log_mel_bank(frontend, lambda rng, samples, rate: babble(rng, samples, rate, talkers), count, seed,
                        BABBLE_SEED)
