"""Coloured noise for training (train/noises.py): the slope and level it claims, from the run's seed, heard as the
cache stores log-mels and drawn by RecordingConditions in place of noise simulated on mel power."""
import numpy as np
import pytest
import torch
from scipy.signal import welch

from train.augment import RecordingConditions
from train.babble import babble_log_mels
from train.melcnn import FRONTEND
from train.noises import NoiseColours, coloured_noise, noise_log_mels

RATE = 22050


@pytest.mark.parametrize("slope", [-6.0, -3.0, 0.0, 3.0])
def test_the_noise_has_the_slope_it_was_drawn_with(slope):
    x = coloured_noise(np.random.default_rng(0), 10 * RATE, RATE, NoiseColours(slope_db_per_octave=(slope, slope),
                                                                              wander_p=0.0))
    assert x.dtype == np.float32 and np.sqrt(np.mean(x.astype(np.float64) ** 2)) == pytest.approx(1.0, rel=1e-4)
    frequencies, power = welch(x, RATE, nperseg=4096)
    band = (frequencies >= 100) & (frequencies <= 8000)
    measured = np.polyfit(np.log2(frequencies[band]), 10 * np.log10(power[band]), 1)[0]
    assert measured == pytest.approx(slope, abs=0.3)


def frame_levels_db(x: np.ndarray, frame: int = RATE // 20) -> np.ndarray:
    frames = x[:len(x) // frame * frame].reshape(-1, frame)
    return 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1))


def test_the_level_wanders_only_when_drawn_to():
    steady = NoiseColours(slope_db_per_octave=(0.0, 0.0), wander_p=0.0)
    wandering = NoiseColours(slope_db_per_octave=(0.0, 0.0), wander_p=1.0, wander_db=6.0, wander_period_s=(1.0, 1.0))
    rng = np.random.default_rng(1)
    assert np.ptp(frame_levels_db(coloured_noise(rng, 5 * RATE, RATE, steady))) < 2.0  # 50-ms frames of steady noise
    levels = [np.ptp(frame_levels_db(coloured_noise(rng, 5 * RATE, RATE, wandering))) for _ in range(8)]
    assert max(levels) > 6.0  # up to +- 6 dB: a swing of up to 12 dB


@pytest.mark.parametrize("make_bank", [noise_log_mels, babble_log_mels])
def test_a_bank_comes_from_the_seed_and_is_laid_out_as_the_cache(make_bank):
    """train.noises.log_mel_bank, which makes the noise and the babble banks."""
    bank = make_bank(FRONTEND, 2, seed=0)
    assert bank.shape == (2, *FRONTEND.image_shape[1:]) and bank.dtype == np.float32
    assert np.allclose(bank.max(axis=(1, 2)), 0.0)  # dB relative to each clip's maximum
    assert np.array_equal(bank, make_bank(FRONTEND, 2, seed=0))
    assert not np.allclose(bank, make_bank(FRONTEND, 2, seed=1))
    with pytest.raises(ValueError, match="count must be positive"):
        make_bank(FRONTEND, 0, seed=0)


def test_noise_fills_every_band_and_frame():
    assert noise_log_mels(FRONTEND, 2, seed=0).min() > -FRONTEND.top_db


def test_the_noise_condition_draws_from_the_bank_instead_of_mel_power():
    """The bank is added as babble is (RecordingConditions.background, tested with babble in test_babble.py)."""
    clip = np.full(FRONTEND.image_shape[1:], -80.0, np.float32)
    bank = noise_log_mels(FRONTEND, 2, seed=0)
    conditions = RecordingConditions(FRONTEND, p=1.0, noises=bank)
    drawn_from = []
    conditions.background = lambda power, chosen: drawn_from.append(chosen) or torch.zeros_like(power)
    conditions.noise = lambda power: pytest.fail("noise on mel power was drawn although a bank was given")
    conditions(clip)
    assert len(drawn_from) == 1 and drawn_from[0] is bank
    with pytest.raises(ValueError, match="noises must be"):
        RecordingConditions(FRONTEND, noises=np.zeros((2, 32, 216)))
