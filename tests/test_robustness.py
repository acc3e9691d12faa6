"""benchmarks/robustness.py: each recording condition does what it claims, on synthetic signals."""
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import benchmarks.robustness as R
from edge.classifier import Classifier
from edge_models import LOW_HZ, tone

RATE = R.RATE


def sine(freq: float, seconds: float = 2.0, amplitude: float = 0.1) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def rms_db(x) -> float:
    return 10 * np.log10(np.mean(np.square(x, dtype=np.float64)))


def test_the_recording_puts_room_tone_at_its_level_around_the_clip():
    clip = sine(1000.0, 5.0)
    x = R.recording(clip, np.random.default_rng(0))
    assert 7 * RATE <= len(x) <= 9 * RATE
    head = x[: RATE // 2]  # room tone alone
    assert rms_db(head) == pytest.approx(R.ROOM_TONE_DBFS, abs=1.0)
    start = int(np.argmax(np.abs(x) > 0.05))
    assert RATE <= start <= 2 * RATE + 10


@pytest.mark.parametrize("db", [-30.0, -10.0])
def test_gain_changes_the_level_by_what_it_says(db):
    x = sine(1000.0)
    assert rms_db(R.gain(x, db)) - rms_db(x) == pytest.approx(db, abs=0.01)


def test_positive_gain_clips_at_full_scale():
    loud = R.gain(sine(1000.0, amplitude=0.8), 6.0)
    assert np.abs(loud).max() == 1.0 and np.mean(np.abs(loud) == 1.0) > 0.1


@pytest.mark.parametrize("freq, low, high, passes", [
    (1000.0, 300.0, 3400.0, True), (100.0, 300.0, 3400.0, False), (7000.0, 300.0, 3400.0, False),
    (3000.0, 100.0, 7000.0, True), (40.0, 100.0, 7000.0, False), (15000.0, 100.0, 7000.0, False)])
def test_band_limits_pass_their_band_and_cut_outside_it(freq, low, high, passes):
    x = sine(freq)
    change = rms_db(R.band(x, RATE, low, high)[RATE // 2:]) - rms_db(x[RATE // 2:])  # after the filter settles
    assert (abs(change) < 1.0) if passes else (change < -20.0), change


@pytest.mark.parametrize("rt60", sorted(R.ROOMS))
def test_rooms_reverberate_for_the_time_they_claim_and_keep_the_level(rt60):
    import pyroomacoustics as pra

    rir = R.room_impulse_response(rt60, RATE, np.random.default_rng(1))
    assert pra.experimental.measure_rt60(rir, fs=RATE, decay_db=30) == pytest.approx(rt60, rel=0.35)
    x = np.zeros(RATE, np.float32)
    x[1000:1200] = 0.5  # a click: the reverberant copy is longer and as loud in RMS
    wet = R.reverb(x, rir)
    assert rms_db(wet) == pytest.approx(rms_db(x), abs=0.01)
    assert np.sum(np.abs(wet) > 1e-3) > 5 * np.sum(np.abs(x) > 1e-3)


@pytest.mark.parametrize("kind", ["white", "pink", "babble"])
@pytest.mark.parametrize("snr", [20.0, 10.0])
def test_noise_is_added_at_the_snr_it_claims(kind, snr, tmp_path):
    x = sine(1000.0)
    babble = tmp_path / "babble.wav"
    sf.write(str(babble), np.random.default_rng(2).standard_normal(3 * RATE).astype(np.float32) * 0.1, RATE)
    noisy = R.add_noise(x, RATE, kind, snr, np.random.default_rng(3), babble=[babble])
    assert rms_db(x) - rms_db(noisy - x) == pytest.approx(snr, abs=0.5)


def test_pink_noise_falls_by_3_db_per_octave_and_white_is_flat():
    rng = np.random.default_rng(4)
    x = np.full(4 * RATE, 0.1, np.float32)  # a constant: the noise's level follows its RMS, its spectrum is the noise's
    for kind, slope in (("white", 0.0), ("pink", -3.0)):
        noise = R.add_noise(x, RATE, kind, 0.0, rng) - x
        spectrum = np.abs(np.fft.rfft(noise)) ** 2
        freqs = np.fft.rfftfreq(len(noise), 1 / RATE)

        def band_db(f):
            return 10 * np.log10(spectrum[(freqs >= f) & (freqs < 2 * f)].mean())
        assert band_db(2000.0) - band_db(1000.0) == pytest.approx(slope, abs=1.0), kind


def test_48_khz_stereo_is_two_channels_the_right_one_a_decibel_down():
    x = sine(1000.0, 1.0)
    y = R.stereo_48k(x, RATE)
    assert y.shape == (48000, 2) and y.dtype == np.float32
    assert rms_db(y[:, 1]) - rms_db(y[:, 0]) == pytest.approx(-1.0, abs=0.05)


def test_mp3_round_trip_keeps_length_and_waveform(tmp_path):
    x = sine(440.0, 2.0, amplitude=0.3)
    y = R.mp3(x, RATE, 32, tmp_path)
    assert abs(len(y) - len(x)) < 0.06 * RATE  # the codec's padding, at most a few frames
    lag = int(np.argmax(np.correlate(y[:RATE], x[:RATE // 2], mode="valid")))
    segment = y[lag:lag + RATE]
    assert np.corrcoef(segment, x[:RATE])[0, 1] > 0.95


def test_a_recording_is_labelled_by_the_listeners_windows_and_silence_counts_as_none(tone_models, tmp_path):
    scorer = R.RecordingScorer(Classifier(tone_models["image"]))
    low = tmp_path / "low.wav"
    sf.write(str(low), tone(LOW_HZ, 7.0, 22050)[:, 0], 22050)
    assert scorer.label(low) == 0 and len(scorer.windows_seen) == 3  # windows ending at 5, 6 and 7 s
    quiet = tmp_path / "quiet.wav"
    sf.write(str(quiet), np.zeros(6 * 22050, np.float32), 22050)
    assert scorer.label(quiet) is None


def test_the_drop_summary_measures_against_clean():
    results = {"m": {"clean": {"accuracy": 0.8}, "gain -30 dB": {"accuracy": 0.7}, "gain +6 dB": {"accuracy": 0.8},
                     "babble 10 dB SNR": {"accuracy": 0.6}}}
    summary = R.summarize(results)["m"]
    assert results["m"]["babble 10 dB SNR"]["drop_points"] == 20.0
    assert summary["worst_condition"] == "babble 10 dB SNR" and summary["mean_drop_points"] == pytest.approx(10.0)
    assert summary["level_spread_points"] == 10.0 and "listener_cost_points" not in summary


def test_the_dataset_clip_is_a_reference_outside_the_drops():
    results = {"m": {"dataset clip": {"accuracy": 0.85}, "clean": {"accuracy": 0.8},
                     "babble 10 dB SNR": {"accuracy": 0.6}}}
    summary = R.summarize(results)["m"]
    assert summary["listener_cost_points"] == 5.0  # the listener's windows lose 5 points on the clean recording
    assert summary["mean_drop_points"] == 20.0 and summary["worst_condition"] == "babble 10 dB SNR"


def test_a_run_of_clean_alone_measures_the_listener_and_has_no_drops():
    """``--conditions clean``: the listener's cost against the dataset clip, in a minute instead of ten."""
    summary = R.summarize({"m": {"dataset clip": {"accuracy": 0.85}, "clean": {"accuracy": 0.8}}})["m"]
    assert summary["listener_cost_points"] == 5.0
    assert summary["mean_drop_points"] is None and summary["worst_condition"] is None


@pytest.fixture
def fold5_clips(fake_esc50):
    from train.data.esc50 import read_clips

    return [c for c in read_clips(fake_esc50) if c.fold == 5]


def test_a_benchmark_run_scores_every_model_and_pair_under_every_condition(tone_models, fold5_clips, tmp_path):
    conditions = [R.DATASET_CLIP] + [c for c in R.CONDITIONS
                                     if c.name in ("clean", "gain -30 dB", "room RT60 0.3 s", "MP3 32 kbit/s")]
    image, waveform = tone_models["image"], tone_models["waveform"]
    pair = R.model_files(f"{image}+{waveform}")
    assert pair == (image, waveform) and R.model_names([pair]) == ["image+waveform"]
    results = R.run([(image,), (waveform,), pair], fold5_clips, conditions, tmp_path, progress=False)
    assert set(results) == {"image", "waveform", "image+waveform"}
    for by_condition in results.values():
        assert list(by_condition) == [c.name for c in conditions]
        assert all(entry["recordings"] == 2 and 0 <= entry["accuracy"] <= 1 for entry in by_condition.values())
    image = results["image"]
    assert image["dataset clip"]["accuracy"] == image["clean"]["accuracy"] == image["gain -30 dB"]["accuracy"] == 1.0
    both_right = results["image+waveform"]["clean"]["accuracy"]
    assert both_right == results["waveform"]["clean"]["accuracy"] == 1.0  # both members right: so is their average


def test_two_runs_files_of_one_name_are_reported_apart_and_one_file_twice_is_refused():
    seed0, seed1 = Path("runs/seed0/model.int8.onnx"), Path("runs/seed1/model.int8.onnx")
    assert R.model_names([(seed0,), (seed1,), (seed0, seed1)]) == [
        "seed0/model.int8", "seed1/model.int8", "seed0/model.int8+seed1/model.int8"]
    assert R.model_names([(Path("a/x.onnx"),), (Path("b/y.onnx"),)]) == ["x", "y"]
    assert R.model_names([]) == []
    with pytest.raises(ValueError, match=f"{seed0} given twice"):
        R.model_names([(seed0,), (seed0,)])


def test_the_dataset_clip_is_scored_from_its_file_not_from_the_recording(tone_models, fold5_clips, tmp_path,
                                                                         monkeypatch):
    monkeypatch.setattr(R, "recording", lambda clip, rng: np.zeros(7 * RATE, np.float32))  # every recording silent
    conditions = [R.DATASET_CLIP, R.CONDITIONS[0]]
    results = R.run([(tone_models["image"],)], fold5_clips, conditions, tmp_path, progress=False)["image"]
    assert results["clean"]["accuracy"] == 0.0 and results["clean"]["silenced"] == 2
    assert results["dataset clip"]["accuracy"] == 1.0


def test_per_clip_labels_name_each_clips_prediction_and_none_when_silenced(tone_models, fold5_clips, tmp_path,
                                                                           monkeypatch):
    monkeypatch.setattr(R, "recording", lambda clip, rng: np.zeros(7 * RATE, np.float32))  # every recording silent
    conditions = [R.DATASET_CLIP, R.CONDITIONS[0]]
    results = R.run([(tone_models["image"],)], fold5_clips, conditions, tmp_path, progress=False,
                    per_clip=True)["image"]
    assert results["dataset clip"]["labels"] == [c.target for c in fold5_clips]
    assert results["clean"]["labels"] == [None] * len(fold5_clips)
    without = R.run([(tone_models["image"],)], fold5_clips, conditions, tmp_path, progress=False)["image"]
    assert all("labels" not in entry for entry in without.values())
