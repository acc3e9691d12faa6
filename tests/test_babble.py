"""Synthetic speech babble for training (train/babble.py): voiced, syllabic, speech-band, from the run's seed."""
import json

import numpy as np
import pytest
import torch
from scipy.signal import freqz

from train.augment import RecordingConditions
from train.babble import Talkers, babble, babble_log_mels, glottal_flow, resonator, talker
from train.melcnn import FRONTEND

RATE = 22050


def test_a_resonator_peaks_at_its_frequency_with_unit_gain_at_0_hz():
    b, a = resonator(700.0, 80.0, RATE)
    freqs, response = freqz(b, a, worN=8192, fs=RATE)
    assert abs(response[0]) == pytest.approx(1.0)
    assert freqs[np.argmax(np.abs(response))] == pytest.approx(700.0, abs=10.0)


def test_the_glottal_pulse_opens_closes_and_stays_shut():
    phase = np.linspace(0, 2, 2001)[:-1]  # two periods
    flow = glottal_flow(phase, opening=0.4, closing=0.16)
    assert flow.min() == 0.0 and flow.max() == pytest.approx(1.0) and flow[np.argmax(flow)] == flow[400]
    assert np.all(flow[(phase % 1) >= 0.56] == 0.0) and np.all(flow[((phase % 1) > 0) & ((phase % 1) < 0.56)] > 0)
    assert np.allclose(flow[:1000], flow[1000:])


def test_a_talker_is_voiced_at_its_pitch():
    """The autocorrelation of a talker drawn at 150 Hz peaks at the pitch period, not anywhere else in 85-255 Hz."""
    voice = talker(np.random.default_rng(0), 2 * RATE, RATE, Talkers(f0_hz=(150.0, 150.0), fricative_p=0.0))
    assert len(voice) == 2 * RATE and np.sqrt(np.mean(voice ** 2)) == pytest.approx(1.0)
    lags = np.arange(RATE // 255, RATE // 85)
    correlation = [np.dot(voice[:-lag], voice[lag:]) for lag in lags]
    assert RATE / lags[int(np.argmax(correlation))] == pytest.approx(150.0, rel=0.15)


def test_a_talker_speaks_in_syllables_in_the_speech_band():
    voice = talker(np.random.default_rng(1), 4 * RATE, RATE)
    spectrum = np.abs(np.fft.rfft(voice)) ** 2
    freqs = np.fft.rfftfreq(len(voice), 1 / RATE)
    assert spectrum[(freqs > 80) & (freqs < 6000)].sum() > 0.95 * spectrum.sum()
    frames = voice[:len(voice) // 220 * 220].reshape(-1, 220)  # a 100-Hz envelope
    envelope = np.sqrt((frames ** 2).mean(axis=1))
    modulation = np.abs(np.fft.rfft(envelope - envelope.mean()))
    rates = np.fft.rfftfreq(len(envelope), 0.01)
    assert modulation[(rates > 1) & (rates < 10)].max() > 2 * modulation[(rates > 15) & (rates < 50)].max()


def test_babble_is_several_talkers_at_a_half_scale_peak():
    mix = babble(np.random.default_rng(2), RATE, RATE, Talkers(count=(6, 6)))
    assert mix.dtype == np.float32 and len(mix) == RATE and np.abs(mix).max() == pytest.approx(0.5)


def test_babble_is_one_more_recording_condition():
    clip = np.full(FRONTEND.image_shape[1:], -80.0, np.float32)
    clip[:, 50:60] = 0.0  # a short loud event in silence
    bank = babble_log_mels(FRONTEND, 1, seed=0)
    torch.manual_seed(0)
    heard = RecordingConditions(FRONTEND, p=1.0, snr_db=(10.0, 10.0), babble=bank)(clip)
    assert heard.shape == clip.shape and heard.max() == 0.0
    assert (heard[:, 100:] > -60).mean() > 0.5  # the silence after the event now holds talkers
    assert RecordingConditions(FRONTEND, p=0.0, babble=bank)(clip).tolist() == clip.tolist()
    with pytest.raises(ValueError, match="babble must be"):
        RecordingConditions(FRONTEND, babble=np.zeros((2, 32, 216)))


@pytest.mark.slow
def test_a_melcnn_run_trains_with_rooms_babble_noise_and_devices(fake_esc50, tmp_path):
    """The waveform-made conditions through `python -m train.melcnn`, as their flags set them up."""
    from train.melcnn import main

    runs = tmp_path / "runs"
    argv = ["--data", str(fake_esc50), "--out", str(runs), "--device", "cpu", "--no-progress", "--epochs", "1",
            "--batch-size", "4", "--widths", "4", "--conditions", "1", "--room-copies", "1", "--room-bank", "2",
            "--babble", "2", "--noise-clips", "2", "--device-copies", "1"]
    assert main(argv) == 0
    (run,) = runs.iterdir()
    config = json.loads((run / "config.json").read_text())
    assert config["babble"] == 2 and config["room_copies"] == 1 and config["room_bank"] == 2
    assert config["noise_clips"] == 2 and config["device_copies"] == 1
    assert 0.0 <= json.loads((run / "metrics.json").read_text())["test_accuracy"] <= 1.0
