"""Training devices (train/devices.py): clipping at full scale and low-bit-rate codecs, made on the waveform."""
import numpy as np
import pytest
import soundfile as sf
import torch

from train.augment import RecordingConditions
from train.devices import clipped, coded, delivered, device_log_mels
from train.melcnn import FRONTEND

RATE = FRONTEND.sample_rate


def tone(hz: float, seconds: float = 1.0, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def band_power(x: np.ndarray, low: float, high: float) -> float:
    power = np.abs(np.fft.rfft(x)) ** 2
    hz = np.fft.rfftfreq(len(x), 1 / RATE)
    return float(power[(hz >= low) & (hz < high)].sum())


def test_clipping_drives_the_peak_over_full_scale_and_adds_odd_harmonics():
    x = tone(441.0)
    y = clipped(x, drive_db=12.0)
    assert np.max(np.abs(y)) == 1.0
    assert np.mean(np.abs(y) == 1.0) > 0.5  # 12 dB over: a sine spends most of its time at the rails
    third, fundamental = band_power(y, 1300, 1350), band_power(y, 430, 450)
    assert 10 * np.log10(third / fundamental) > -15  # a square wave's third harmonic is -9.5 dB
    assert band_power(x, 1300, 1350) / band_power(x, 430, 450) < 1e-6
    assert np.array_equal(clipped(np.zeros(100, np.float32), 6.0), np.zeros(100))  # silence stays silence


@pytest.mark.parametrize("codec, level", [("VORBIS", 1.0), ("OPUS", 0.9)])
def test_a_low_bit_rate_codec_keeps_a_tone_and_quantises_noise(codec, level):
    x = tone(1000.0, seconds=2.0)
    y = coded(x, RATE, codec, level)
    assert y.shape == x.shape and y.dtype == np.float32
    assert 0.5 < band_power(y, 950, 1050) / band_power(x, 950, 1050) < 2.0  # within 3 dB
    noise = (0.1 * np.random.default_rng(0).standard_normal(2 * RATE)).astype(np.float32)
    assert np.corrcoef(coded(noise, RATE, codec, level), noise)[0, 1] < 0.9  # too many bits needed to keep it
    with pytest.raises(ValueError, match="codec must be one of VORBIS, OPUS, not 'MP3'"):
        coded(x, RATE, "MP3", 0.5)


def test_opus_at_its_lowest_bit_rate_keeps_only_a_narrow_band():
    noise = (0.1 * np.random.default_rng(0).standard_normal(2 * RATE)).astype(np.float32)
    y = coded(noise, RATE, "OPUS", 0.99)  # about 9 kbit/s
    assert band_power(y, 5000, 11025) / band_power(noise, 5000, 11025) < 0.01
    assert band_power(y, 0, 4000) / band_power(noise, 0, 4000) > 0.25


def test_a_device_clips_codes_or_does_both():
    x = tone(441.0, seconds=2.0)  # peak 0.3
    kinds = set()
    for seed in range(12):
        y = delivered(x, RATE, np.random.default_rng(seed))
        assert y.shape == x.shape
        at_the_rails = bool(np.any(np.abs(y) == 1.0))  # only a clipped waveform that no codec smoothed after
        kinds.add("clipped" if at_the_rails else "clipped and coded" if np.max(np.abs(y)) > 0.6 else "coded")
    assert kinds == {"clipped", "coded", "clipped and coded"}


def test_each_clip_gets_its_own_devices_from_the_seed(tmp_path):
    paths = []
    for n, hz in enumerate((500.0, 3000.0)):
        paths.append(tmp_path / f"tone-{n}.wav")
        sf.write(paths[-1], tone(hz, seconds=5.0), RATE)
    copies = device_log_mels(paths, FRONTEND, copies=3, seed=0, progress=False)
    assert copies.shape == (2, 3, *FRONTEND.image_shape[1:]) and copies.dtype == np.float32
    assert np.all(copies.max(axis=(2, 3)) == 0.0) and copies.min() >= -FRONTEND.top_db
    clean = FRONTEND.log_mel(tone(500.0, seconds=5.0), RATE)
    assert not np.allclose(copies[0], clean[None], atol=0.5)  # every copy changed by its device
    again = device_log_mels(paths, FRONTEND, copies=3, seed=0, progress=False)
    other = device_log_mels(paths, FRONTEND, copies=3, seed=1, progress=False)
    assert np.array_equal(copies, again) and not np.array_equal(copies, other)
    with pytest.raises(ValueError, match="copies must be positive"):
        device_log_mels(paths, FRONTEND, copies=0, seed=0)


def test_a_clip_from_a_device_is_one_of_its_own_copies_unless_it_was_heard_in_a_room():
    def bright_band(band: int) -> np.ndarray:
        image = np.full(FRONTEND.image_shape[1:], -FRONTEND.top_db, np.float32)
        image[band] = 0.0
        return image

    def only_the_copies(conditions: RecordingConditions) -> RecordingConditions:
        conditions.noise = lambda power: torch.zeros_like(power)  # p = 1 adds noise and a microphone: none here
        conditions.microphone = lambda: 1.0
        conditions.reverberate = lambda power: power
        return conditions

    def band_of(image: np.ndarray) -> int:
        return int(np.argmax(image.max(axis=1)))

    clean = bright_band(0)
    devices = np.stack([np.stack([bright_band(10)] * 2), np.stack([bright_band(20)] * 2)])  # (clips, copies, ...)
    conditions = only_the_copies(RecordingConditions(FRONTEND, p=1.0, devices=devices))
    assert "devices=2 per clip" in repr(conditions)
    torch.manual_seed(0)
    assert [band_of(conditions(clean, index)) for index in (0, 1)] == [10, 20]
    rooms = np.stack([np.stack([bright_band(30)])] * 2)
    in_a_room = only_the_copies(RecordingConditions(FRONTEND, p=1.0, rooms=rooms, devices=devices))
    assert band_of(in_a_room(clean, 1)) == 30  # a clip heard in a room is not a device's copy as well
    sometimes = only_the_copies(RecordingConditions(FRONTEND, p=0.5, rooms=rooms, devices=devices))
    drawn = [band_of(sometimes(clean, 0)) for _ in range(200)]
    assert 0.15 < drawn.count(10) / 200 < 0.35  # (1 - p) p = 1/4 of the clips: not in a room, then from a device
    with pytest.raises(ValueError, match="devices must be"):
        RecordingConditions(FRONTEND, devices=np.zeros((2, 64, 216)))
