"""The one log-mel front end (edge/frontend.py): shape, determinism, resampling, serialisation,
parity with librosa, and proof that training and the edge compute the very same features."""
import ast
import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest

from edge.frontend import FrontEnd, dereverberate, fit_length, mel_filterbank, pcen, resample, running_average
from edge_models import LOW_HZ

REPO = Path(__file__).resolve().parents[1]
ESC50_DIR = os.environ.get("ESC50_DIR")

# Measured against librosa 0.11 on all 2000 real ESC-50 clips: max abs difference 1.0e-3 dB
# (2-104476-A-37.wav; float32 rounding in the quietest bins); on the synthetic signals below 2.4e-4 dB.
# The tolerance is ten times the worst real clip.
PARITY_TOLERANCE_DB = 0.01


def tone(freq, seconds=5.0, rate=44100, amplitude=0.3):
    t = np.arange(int(round(seconds * rate))) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def synthetic_signals(rate):
    """Tones, a chirp, white noise, clicks and a mostly silent clip: spectra the CNN will see."""
    rng = np.random.default_rng(0)
    n = 5 * rate
    t = np.arange(n) / rate
    clicks = np.zeros(n, np.float32)
    clicks[:: rate // 3] = 1.0
    quiet_tail = tone(440, rate=rate)
    quiet_tail[rate:] = 0.0
    return {
        "tone 300 Hz": tone(300, rate=rate),
        "tone 3 kHz": tone(3000, rate=rate),
        "chirp": (0.5 * np.sin(2 * np.pi * (50 + 1000 * t) * t)).astype(np.float32),
        "white noise": (0.1 * rng.standard_normal(n)).astype(np.float32),
        "clicks": clicks,
        "1 s tone then silence": quiet_tail,
    }


def librosa_log_mel(waveform, rate, frontend: FrontEnd):
    """The reference: librosa's resample (soxr_hq), melspectrogram (Slaney, centred, zero padding), power_to_db."""
    librosa = pytest.importorskip("librosa")
    y = librosa.resample(np.asarray(waveform, np.float32), orig_sr=rate, target_sr=frontend.sample_rate,
                         res_type="soxr_hq") if rate != frontend.sample_rate else waveform
    y = librosa.util.fix_length(y, size=frontend.clip_samples)
    power = librosa.feature.melspectrogram(
        y=y, sr=frontend.sample_rate, n_fft=frontend.n_fft, hop_length=frontend.hop_length,
        n_mels=frontend.n_mels, fmin=frontend.fmin, fmax=frontend.fmax, htk=False, norm="slaney",
        center=True, pad_mode="constant", power=2.0, window="hann")
    return librosa.power_to_db(power, ref=np.max, top_db=frontend.top_db)


# --- shape, dtype, determinism -------------------------------------------------------------------

def test_image_shape_dtype_and_range():
    frontend = FrontEnd()
    db = frontend.log_mel(tone(1000), 44100)
    assert db.shape == (128, 216) and db.dtype == np.float32
    assert db.max() == 0.0 and db.min() >= -80.0
    image = frontend(tone(1000), 44100)
    assert image.shape == frontend.image_shape == (3, 128, 216)
    assert image.dtype == np.float32
    # channel c is ((db + 80) / 80 - mean[c]) / std[c]: undo it and get the dB back
    for c in range(3):
        back = (image[c] * frontend.std[c] + frontend.mean[c]) * 80.0 - 80.0
        np.testing.assert_allclose(back, db, atol=1e-4)


def test_deterministic():
    frontend = FrontEnd()
    x = synthetic_signals(44100)["white noise"]
    first = frontend(x, 44100)
    assert np.array_equal(first, frontend(x.copy(), 44100))
    assert np.array_equal(first, FrontEnd()(x, 44100))


def test_input_is_not_modified():
    x = synthetic_signals(22050)["chirp"]
    before = x.copy()
    FrontEnd()(x, 22050)
    assert np.array_equal(x, before)


def test_silence_gives_the_floor_not_nan():
    db = FrontEnd().log_mel(np.zeros(44100 * 5, np.float32), 44100)
    assert np.isfinite(db).all() and (db == 0.0).all()  # librosa gives 0 dB too: S == ref == amin


def test_stereo_is_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="mono"):
        FrontEnd()(np.zeros((44100, 2), np.float32), 44100)


# --- resampling, padding, cropping ---------------------------------------------------------------

@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
def test_other_rates_land_in_the_same_mel_band(rate):
    """A 1 kHz tone at any input rate peaks in the same mel band after resampling to 22.05 kHz."""
    frontend = FrontEnd()
    db = frontend.log_mel(tone(1000, rate=rate), rate)
    assert db.shape == (128, 216)
    reference = frontend.log_mel(tone(1000, rate=22050), 22050)
    assert np.argmax(db.mean(axis=1)) == np.argmax(reference.mean(axis=1))


def test_resample_length_and_identity():
    x = tone(440, seconds=1.0, rate=48000)
    assert len(resample(x, 48000, 22050)) == 22050
    same = resample(x, 48000, 48000)
    assert same.dtype == np.float32 and np.array_equal(same, x)


def test_short_clip_is_zero_padded_and_long_clip_cropped():
    frontend = FrontEnd()
    short = tone(1000, seconds=2.0, rate=22050)
    padded = np.concatenate([short, np.zeros(22050 * 3, np.float32)])
    assert np.array_equal(frontend.log_mel(short, 22050), frontend.log_mel(padded, 22050))

    long = np.concatenate([padded, tone(5000, seconds=3.0, rate=22050)])  # only the first 5 s count
    assert np.array_equal(frontend.log_mel(long, 22050), frontend.log_mel(padded, 22050))


def test_fit_length():
    assert np.array_equal(fit_length(np.arange(5.0), 3), [0, 1, 2])
    assert np.array_equal(fit_length(np.arange(2.0), 4), [0, 1, 0, 0])
    assert fit_length(np.ones((1, 2)), 3).shape == (1, 3)


@pytest.mark.parametrize("n", [0, 1, 100])
def test_tiny_inputs_still_give_a_full_image(n):
    assert FrontEnd()(np.ones(n, np.float32) * 0.1, 44100).shape == (3, 128, 216)


# --- parameters: validation, JSON, digest --------------------------------------------------------

def test_json_round_trip():
    frontend = FrontEnd(n_mels=64, hop_length=256, fmin=20.0)
    again = FrontEnd.from_json(frontend.to_json())
    assert again == frontend
    assert again.digest() == frontend.digest()
    assert again.image_shape == (3, 64, 1 + 110250 // 256)


@pytest.mark.parametrize("change", [
    {"sample_rate": 16000, "fmax": 8000.0}, {"clip_seconds": 4.0}, {"n_fft": 2048}, {"hop_length": 256},
    {"n_mels": 64}, {"fmin": 20.0}, {"fmax": 8000.0}, {"top_db": 60.0},
    {"mean": (0.5, 0.5, 0.5)}, {"std": (0.5, 0.5, 0.5)},
])
def test_digest_changes_with_every_parameter(change):
    assert FrontEnd(**change).digest() != FrontEnd().digest()


def test_digest_is_stable():
    """Cache names and shipped models depend on it: the default front end, and MelCNN's, keep their digests
    (a changed parameter, e.g. top_db 80 -> 60, fails here: bump the digest only with a new cache and models)."""
    from train.melcnn import FRONTEND

    assert FrontEnd().digest() == FrontEnd.from_json(FrontEnd().to_json()).digest() == "a0466f583b90"
    assert FRONTEND.digest() == "2147666a35f1"


def test_unknown_or_invalid_parameters_are_refused():
    with pytest.raises(ValueError, match="unknown front-end parameters"):
        FrontEnd.from_json('{"n_mels": 64, "colour": "blue"}')
    with pytest.raises(ValueError, match="fmax"):
        FrontEnd(sample_rate=16000)  # fmax 11025 is above the 8 kHz Nyquist frequency
    with pytest.raises(ValueError, match="positive"):
        FrontEnd(hop_length=0)
    with pytest.raises(ValueError, match="mean and std"):
        FrontEnd(channels=1)
    with pytest.raises(ValueError, match="compression"):
        FrontEnd(compression="log")
    with pytest.raises(ValueError, match="PCEN"):
        FrontEnd(compression="pcen", pcen_gain=1.5)
    with pytest.raises(ValueError, match=r"db\+pcen gives 2 channels \(db, pcen\), not 3"):
        FrontEnd(compression="db+pcen")  # three ImageNet channels by default


def test_a_pcen_front_end_round_trips_and_a_db_one_serialises_without_pcen_fields():
    frontend = FrontEnd(n_mels=64, compression="pcen", pcen_time_constant=0.2)
    assert FrontEnd.from_json(frontend.to_json()) == frontend
    assert frontend.digest() != FrontEnd(n_mels=64).digest()
    assert "pcen" not in FrontEnd().to_json()  # models exported before PCEN existed read as they were written


def test_only_a_front_end_with_the_dereverberated_layer_serialises_its_fields():
    two = FrontEnd(n_mels=64, channels=2, mean=(0.5, 0.3), std=(0.25, 0.44), compression="db+pcen")
    three = FrontEnd(n_mels=64, channels=3, mean=(0.5, 0.3, 0.36), std=(0.25, 0.44, 0.26),
                     compression="db+pcen+dereverb", dereverb_rt60=0.8)
    assert "dereverb" not in two.to_json()  # models exported before the layer existed keep their digests
    assert FrontEnd.from_json(three.to_json()) == three
    assert three.digest() != dataclasses.replace(three, dereverb_rt60=0.5).digest()
    with pytest.raises(ValueError, match="dereverberation"):
        FrontEnd(dereverb_floor_db=3.0)


# --- per-channel energy normalisation -------------------------------------------------------------

def test_pcen_matches_librosa():
    librosa = pytest.importorskip("librosa")
    signal = pytest.importorskip("scipy.signal")
    rng = np.random.default_rng(0)
    energy = rng.gamma(1.0, 1e6, size=(64, 216)) * np.linspace(0.01, 10, 216)
    hop_seconds, time_constant = 512 / 22050, 0.4
    frames = time_constant / hop_seconds
    b = (np.sqrt(1 + 4 * frames ** 2) - 1) / (2 * frames ** 2)
    expected = librosa.pcen(energy, sr=22050, hop_length=512, time_constant=time_constant,
                            zi=signal.lfilter_zi([b], [1, b - 1]) * energy[:, :1])
    assert np.allclose(pcen(energy, hop_seconds, time_constant), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("b", [0.0566, 0.5, 0.999, 1.0])
def test_the_running_average_is_the_first_order_recursion_over_any_length(b):
    """Blocked cumulative sums stand in for a loop over frames; they must stay exact (and finite) however long
    the input and however fast the average, across the blocks' edges."""
    energy = np.random.default_rng(1).gamma(1.0, 1e9, size=(3, 3000))
    expected, state = np.empty_like(energy), energy[:, 0]
    for t in range(energy.shape[1]):
        state = (1 - b) * state + b * energy[:, t]
        expected[:, t] = state
    assert np.allclose(running_average(energy, b), expected, rtol=1e-12, atol=0)
    assert running_average(energy[:, :0], b).shape == (3, 0)


def burst_in_noise(noise_below_db: float | None, rate: int = 22050):
    """A 1-s 1-kHz tone at 2-3 s, alone or in steady white noise ``noise_below_db`` dB below it."""
    t = np.arange(5 * rate) / rate
    burst = 0.3 * np.sin(2 * np.pi * 1000 * t) * ((t > 2) & (t < 3))
    if noise_below_db is not None:
        noise = np.random.default_rng(0).standard_normal(t.size)
        burst = burst + noise * np.sqrt(np.mean(burst[(t > 2) & (t < 3)] ** 2) / 10 ** (noise_below_db / 10))
    return burst.astype(np.float32), rate


def test_pcen_makes_steady_noise_look_like_silence_where_db_raises_the_floor():
    """Noise 10 dB below a tone burst: the dB image's background rises by 61 % of the burst's contrast over
    silence, the PCEN image's by 11 % (measured); the tone stands out in both."""
    shifts = {}
    for compression in ("db", "pcen"):
        frontend = FrontEnd(n_mels=64, channels=1, mean=(0.0,), std=(1.0,), compression=compression)
        quiet, noisy = frontend(*burst_in_noise(None))[0], frontend(*burst_in_noise(10.0))[0]
        seconds = np.arange(quiet.shape[1]) * frontend.hop_length / frontend.sample_rate
        outside, inside = (seconds < 1.5) | (seconds > 3.6), (seconds > 2.2) & (seconds < 2.8)
        floor = np.median(quiet[:, outside])
        shifts[compression] = (np.median(noisy[:, outside]) - floor) / (quiet[:, inside].max() - floor)
    assert shifts["db"] > 0.5 and shifts["pcen"] < 0.15


def test_a_db_plus_pcen_image_holds_the_db_image_then_the_pcen_image():
    wave, rate = burst_in_noise(20.0)
    both = FrontEnd(n_mels=64, channels=2, mean=(0.5, 0.3), std=(0.25, 0.44), compression="db+pcen")(wave, rate)
    db = FrontEnd(n_mels=64, channels=1, mean=(0.5,), std=(0.25,))(wave, rate)
    alone = FrontEnd(n_mels=64, channels=1, mean=(0.3,), std=(0.44,), compression="pcen")(wave, rate)
    assert both.shape == (2, 64, 216) and np.array_equal(both[:1], db) and np.array_equal(both[1:], alone)


def test_the_pcen_image_does_not_depend_on_the_gain():
    frontend = FrontEnd(n_mels=64, channels=1, mean=(0.0,), std=(1.0,), compression="pcen")
    wave, rate = burst_in_noise(20.0)
    loud, quiet = frontend(wave, rate), frontend(wave * 10 ** (-30 / 20), rate)
    assert np.abs(loud - quiet).mean() < 1e-3 * np.abs(loud).mean() + 1e-4


# --- late-reverberation subtraction ----------------------------------------------------------------

def test_dereverberation_removes_a_tail_that_decays_as_the_assumed_room_and_keeps_a_steady_sound():
    """One band holds a click whose tail decays 60 dB in 0.5 s, the other a steady sound: after subtraction, the
    tail sits at the floor (-20 dB below itself) from the delay on, the click keeps its energy, and the steady
    sound loses -10 log10(1 - exp(-2 delta d)) dB."""
    hop = 512 / 22050
    t = np.arange(216) * hop
    power = np.stack([np.where(t >= 1.0, 10 ** (-6 * (t - 1.0) / 0.5), 0.0), np.full(216, 0.2)]).astype(np.float32)
    out = dereverberate(power, hop, rt60=0.5, delay=0.05, floor_db=-20.0)
    click = int(np.argmax(power[0]))
    assert out[0, click] == power[0, click] and out[0, click + 1] == power[0, click + 1]  # within the delay
    tail = slice(click + 2, click + 40)  # 0.88 s, 106 dB down (float32 reaches zero later)
    assert np.allclose(out[0, tail] / power[0, tail], 10 ** -2.0, rtol=1e-4)
    decay = 10 ** (-6 * 2 * hop / 0.5)
    assert np.allclose(out[1, 2:], 0.2 * (1 - decay), rtol=1e-5) and np.array_equal(out[1, :2], power[1, :2])


def test_the_dereverberated_layer_sharpens_a_reverberant_click_train():
    """Clicks heard in a synthetic room (exponentially decaying noise, RT60 0.5 s): between the clicks, the
    dereverberated image falls further below the clicks than the dB image does."""
    rate, rng = 22050, np.random.default_rng(0)
    click_samples = np.arange(rate // 2, 5 * rate - rate // 2, rate // 2)
    dry = np.zeros(5 * rate, np.float32)
    dry[click_samples] = 1.0
    n = rate // 2
    response = rng.standard_normal(n) * 10 ** (-3 * np.arange(n) / rate / 0.5)
    response[0] = 8.0
    wet = np.convolve(dry, response)[:dry.size].astype(np.float32)
    frontend = FrontEnd(n_mels=64, channels=3, mean=(0.0,) * 3, std=(1.0,) * 3, compression="db+pcen+dereverb")
    image = frontend(wet, rate)
    clicks = click_samples // frontend.hop_length
    between = clicks[:-1] + (clicks[1] - clicks[0]) // 2
    contrast = {name: image[c][:, clicks].mean() - image[c][:, between].mean()
                for name, c in (("db", 0), ("dereverb", 2))}
    assert contrast["dereverb"] > contrast["db"] + 0.05


# --- parity with librosa -------------------------------------------------------------------------

def test_mel_filterbank_matches_librosa():
    librosa = pytest.importorskip("librosa")
    ours = mel_filterbank(22050, 1024, 128, 0.0, 11025.0)
    theirs = librosa.filters.mel(sr=22050, n_fft=1024, n_mels=128, fmin=0.0, fmax=11025.0, htk=False, norm="slaney")
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("rate", [22050, 44100])
def test_parity_with_librosa_on_synthetic_signals(rate):
    frontend = FrontEnd()
    for name, x in synthetic_signals(rate).items():
        diff = np.abs(frontend.log_mel(x, rate) - librosa_log_mel(x, rate, frontend)).max()
        assert diff <= PARITY_TOLERANCE_DB, f"{name} at {rate} Hz: {diff:.2e} dB from librosa"


def test_parity_with_librosa_for_another_front_end():
    frontend = FrontEnd(sample_rate=16000, n_fft=512, hop_length=160, n_mels=64, fmin=50.0, fmax=8000.0)
    for name, x in synthetic_signals(44100).items():
        diff = np.abs(frontend.log_mel(x, 44100) - librosa_log_mel(x, 44100, frontend)).max()
        assert diff <= PARITY_TOLERANCE_DB, f"{name}: {diff:.2e} dB from librosa"


@pytest.mark.realdata
@pytest.mark.skipif(not ESC50_DIR, reason="set ESC50_DIR to an ESC-50 folder")
def test_parity_with_librosa_on_real_clips():
    """The first clip of every class (50 real clips; on all 2000 the largest difference was 1.0e-3 dB)."""
    from edge.audio import load_audio
    from train.data.esc50 import read_clips

    frontend = FrontEnd()
    first = {}
    for clip in read_clips(ESC50_DIR):
        first.setdefault(clip.target, clip)
    worst = 0.0
    for clip in first.values():
        wave, rate = load_audio(clip.path)
        diff = float(np.abs(frontend.log_mel(wave, rate) - librosa_log_mel(wave, rate, frontend)).max())
        assert diff <= PARITY_TOLERANCE_DB, f"{clip.path.name}: {diff:.2e} dB from librosa"
        worst = max(worst, diff)
    assert len(first) > 1 and worst > 0.0  # really compared something (float32 paths never agree bit for bit)


# --- training and the edge share one front end ---------------------------------------------------

def test_training_cache_equals_edge_classifier_input(fake_esc50, tone_models, tmp_path):
    """For every clip, the image a training batch gets from the cache is the image the edge feeds the model."""
    import torch

    from edge.audio import load_audio
    from edge.classifier import Classifier
    from train.data.cache import load_log_mels, precompute
    from train.datasets import LogMelImages

    classifier = Classifier(tone_models["image"])
    frontend = classifier.frontend
    precompute(fake_esc50, frontend, cache_dir=tmp_path, jobs=1, progress=False)  # in-process: fast
    log_mels, clips = load_log_mels(fake_esc50, frontend, cache_dir=tmp_path)
    dataset = LogMelImages(log_mels, [c.target for c in clips], frontend)
    for i, clip in enumerate(clips):
        image, target = dataset[i]
        edge_input = classifier.features(*load_audio(clip.path))
        assert isinstance(image, torch.Tensor) and int(target) == clip.target
        assert edge_input.shape == (1, *image.shape)
        assert np.array_equal(image.numpy(), edge_input[0]), clip.path.name


def test_train_has_no_second_mel_implementation():
    """Nothing under train/ computes a spectrogram itself; the log-mel users import edge.frontend."""
    forbidden = ("stft", "rfft", "melspectrogram", "MelSpectrogram", "mel_frequencies", "power_to_db",
                 "amplitude_to_db", "AmplitudeToDB", "filters.mel", "melscale_fbanks")
    users = set()
    for path in sorted((REPO / "train").rglob("*.py")):
        source = path.read_text()
        tree = ast.parse(source)
        names = {n.attr if isinstance(n, ast.Attribute) else n.id
                 for n in ast.walk(tree) if isinstance(n, (ast.Attribute, ast.Name))}
        calls = {name for name in forbidden if name in names or f".{name}(" in source}
        assert not calls, f"{path.relative_to(REPO)} computes spectrograms itself: {sorted(calls)}"
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        if "edge.frontend" in imported:
            users.add(path.relative_to(REPO).as_posix())
    assert {"train/data/cache.py", "train/resnet.py"} <= users


def test_every_waveform_window_is_scaled_to_the_same_peak():
    from edge.frontend import normalize_peak

    t = np.arange(8000) / 8000
    quiet = (10 ** (-35 / 20) * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    for window in (quiet, quiet * 10 ** (30 / 20), quiet * 10 ** (37 / 20)):  # peaks at -35, -5 and +2 dBFS
        scaled = normalize_peak(window)
        assert 20 * np.log10(np.abs(scaled).max()) == pytest.approx(-6.0, abs=0.01)
        assert np.allclose(scaled / np.abs(scaled).max(), quiet / np.abs(quiet).max(), atol=1e-6)  # a gain only
    silent = np.zeros(100, np.float32)
    assert normalize_peak(silent) is silent


def test_the_edge_feeds_a_waveform_model_the_same_window_whatever_the_gain(tone_models):
    from edge.classifier import Classifier

    model = Classifier(tone_models["waveform"])
    wave = tone(LOW_HZ, 5.0, 8000, amplitude=0.15)
    windows = [model.features(wave * 10 ** (gain / 20), 8000) for gain in (-30, -10, 0, 6)]
    assert all(np.allclose(w, windows[0], atol=1e-6) for w in windows)
