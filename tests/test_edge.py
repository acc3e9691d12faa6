"""The edge classifier and `python -m edge.listen --file`, with tiny hand-built ONNX models."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge.audio import MAX_PEAK_BOOST_DB, channel_delay, clipped_runs, declip, downmix, load_audio
from edge.classifier import Classifier, ModelFileError, averaged, softmax, top_k
from edge.frontend import audionet_input, normalize_peak
from edge import listen
from edge.listen import Listener, RingBuffer, default_models, level_dbfs, main, parse_args
from edge.metadata import ModelMetadataError
from edge_models import CLASSES, HIGH_HZ, LOW_HZ, image_model, tone, write_clip

REPO = Path(__file__).resolve().parents[1]


def listen_json(capsys, *argv):
    """Run the CLI in-process with --json; returns (exit code, parsed windows, stderr)."""
    code = main([*map(str, argv), "--json"])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


@pytest.mark.parametrize("kind", ["image", "waveform"])
@pytest.mark.parametrize("freq, label", [(LOW_HZ, "low_tone"), (HIGH_HZ, "high_tone")])
@pytest.mark.parametrize("suffix, rate, channels, seconds", [
    (".wav", 44100, 1, 5.0), (".flac", 48000, 2, 7.5), (".ogg", 16000, 1, 6.0), (".wav", 8000, 2, 2.0)])
def test_file_windows_and_labels(tone_models, tmp_path, capsys, kind, freq, label, suffix, rate, channels, seconds):
    clip = write_clip(tmp_path / f"clip{suffix}", freq, seconds, rate, channels)
    code, windows, err = listen_json(capsys, "--model", tone_models[kind], "--file", clip)
    assert code == 0, err
    expected_ends = [5.0 + k for k in range(int(seconds - 5.0) + 1)] if seconds >= 5 else [seconds]
    assert [w["end_s"] for w in windows] == pytest.approx(expected_ends, abs=1e-3)
    assert {w["label"] for w in windows} == {label}
    assert all(w["status"] == "ok" and w["file"] == str(clip) for w in windows)
    assert f"windows {len(windows)}; latency per window median" in err


def test_json_fields_and_top_k(tone_models, tmp_path, capsys):
    clip = write_clip(tmp_path / "low.wav", LOW_HZ)
    code, [window], _ = listen_json(capsys, "--model", tone_models["image"], "--file", clip, "--top-k", 2)
    assert code == 0
    assert [t["label"] for t in window["top"]] == ["low_tone", "hum"]
    assert window["top"][0]["probability"] >= window["top"][1]["probability"]
    assert window["start_s"] == 0.0 and window["latency_ms"] > 0
    assert window["level_dbfs"] == pytest.approx(level_dbfs(tone(LOW_HZ, 5.0, 44100)[:, 0]), abs=0.1)


def test_text_output(tone_models, tmp_path, capsys):
    clip = write_clip(tmp_path / "high.wav", HIGH_HZ, seconds=6.0)
    assert main(["--model", str(tone_models["image"]), "--file", str(clip)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all("high_tone" in line.split("|")[0] for line in lines)


def test_threshold_reports_uncertain(tone_models, tmp_path, capsys):
    clip = write_clip(tmp_path / "low.wav", LOW_HZ)
    code, [window], _ = listen_json(capsys, "--model", tone_models["waveform"], "--file", clip, "--threshold", 0.999)
    assert code == 0 and window["status"] == "uncertain" and window["label"] is None
    assert window["top"][0]["label"] == "low_tone"  # still shown, just not claimed
    main(["--model", str(tone_models["waveform"]), "--file", str(clip), "--threshold", "0.999"])
    assert "uncertain (low_tone" in capsys.readouterr().out


def test_smoothing_averages_the_last_windows(tone_models, tmp_path, capsys):
    x = np.concatenate([tone(LOW_HZ, 7.0, 16000), tone(HIGH_HZ, 7.0, 16000)])
    clip = tmp_path / "low_then_high.wav"
    sf.write(clip, x, 16000)
    args = ("--model", tone_models["waveform"], "--file", clip, "--top-k", len(CLASSES))
    _, raw, _ = listen_json(capsys, *args)
    _, smoothed, _ = listen_json(capsys, *args, "--smooth", 3)

    def probs(window):
        return np.array([{t["label"]: t["probability"] for t in window["top"]}[c] for c in CLASSES])

    raw_p = np.array([probs(w) for w in raw])
    for i, window in enumerate(smoothed):
        assert probs(window) == pytest.approx(raw_p[max(0, i - 2):i + 1].mean(axis=0), abs=2e-4)
    assert raw[5]["label"] == "high_tone" != smoothed[5]["label"]  # smoothing lags behind the change


def room_tone(seconds: float, rate: int, dbfs: float, seed: int = 0) -> np.ndarray:
    """Steady background noise at ``dbfs`` RMS."""
    noise = np.random.default_rng(seed).standard_normal(int(seconds * rate))
    return (noise * 10 ** (dbfs / 20)).astype(np.float32)


def test_a_quiet_sound_after_room_tone_is_classified_and_room_tone_alone_is_silence(tone_models, tmp_path, capsys):
    """The gate follows the background, not a fixed level: a tone at -73 dBFS (what a fixed -60 dBFS gate
    hid) in -90 dBFS room tone is a sound; the room tone by itself is silence."""
    rate = 22050
    background = room_tone(12.0, rate, -90.0)
    quiet = tmp_path / "quiet.wav"
    t = np.arange(6 * rate) / rate
    sound = np.concatenate([np.zeros(6 * rate), 3e-4 * np.sin(2 * np.pi * LOW_HZ * t)])
    sf.write(quiet, (background + sound).astype(np.float32), rate)
    code, windows, _ = listen_json(capsys, "--model", tone_models["image"], "--file", quiet)
    assert code == 0
    assert [w["status"] for w in windows][:2] == ["silence", "silence"] and windows[-1]["label"] == "low_tone"
    assert windows[0]["top"] == [] and windows[0]["latency_ms"] is None
    assert windows[-1]["level_dbfs"] < -70 and windows[-1]["floor_dbfs"] == pytest.approx(-90, abs=1.5)
    alone = tmp_path / "room.wav"
    sf.write(alone, background, rate)
    _, windows, _ = listen_json(capsys, "--model", tone_models["image"], "--file", alone)
    assert {w["status"] for w in windows} == {"silence"}


def test_the_gate_classifies_loud_steady_sounds_and_can_be_turned_off(tone_models, tmp_path, capsys):
    rate = 22050
    steady = tmp_path / "steady.wav"  # one level throughout: the window is its own background
    sf.write(steady, tone(LOW_HZ, 6.0, rate, amplitude=0.1)[:, 0], rate)  # -23 dBFS, above --always-db
    _, windows, _ = listen_json(capsys, "--model", tone_models["image"], "--file", steady)
    assert {w["status"] for w in windows} == {"ok"}
    _, windows, _ = listen_json(capsys, "--model", tone_models["image"], "--file", steady, "--always-db", "-10")
    assert {w["status"] for w in windows} == {"silence"}
    _, windows, _ = listen_json(capsys, "--model", tone_models["image"], "--file", steady, "--always-db", "-10",
                                "--gate-db", "0")
    assert {w["status"] for w in windows} == {"ok"}


def test_digital_silence_is_silence(tone_models, tmp_path, capsys):
    zeros = tmp_path / "zeros.wav"
    sf.write(zeros, np.zeros(6 * 8000, np.float32), 8000)
    _, windows, _ = listen_json(capsys, "--model", tone_models["waveform"], "--file", zeros)
    assert [w["status"] for w in windows] == ["silence", "silence"] and windows[0]["level_dbfs"] == -120.0


def test_classifier_api(tone_models):
    for kind, shape in (("image", (1, 3, 128, 216)), ("waveform", (1, 1, 40000))):
        model = Classifier(tone_models[kind])
        assert model.classes == CLASSES and model.clip_seconds == 5.0
        wave = tone(HIGH_HZ, 3.0, 32000)[:, 0]
        assert model.features(wave, 32000).shape == shape
        p = model.predict(wave, 32000)
        assert p.shape == (3,) and p.sum() == pytest.approx(1.0) and model.top_k(p, 1)[0][0] == "high_tone"
    assert softmax(np.array([[1000.0, 0.0]]))[0] == pytest.approx([1.0, 0.0])
    assert top_k(np.array([0.2, 0.5, 0.3]), ["a", "b", "c"], 2) == [("b", 0.5), ("c", 0.3)]


def test_ring_buffer_keeps_the_latest_samples():
    ring = RingBuffer(5)
    ring.write(np.arange(3, dtype=np.float32))
    assert ring.latest().tolist() == [0, 1, 2]
    ring.write(np.arange(3, 7, dtype=np.float32))
    assert ring.latest().tolist() == [2, 3, 4, 5, 6] and ring.count == 7
    ring.write(np.arange(10, 22, dtype=np.float32))
    assert ring.latest().tolist() == [17, 18, 19, 20, 21]


def test_listener_skips_stale_windows_when_behind(tone_models, capsys):
    """A live loop that fell behind classifies only the newest window and counts the ones it skipped."""
    rate = 8000
    listener = Listener(Classifier(tone_models["waveform"]), rate, parse_args(["--model", "m", "--json"]))
    listener.push(tone(LOW_HZ, 5.5, rate)[:, 0])
    listener.push(tone(HIGH_HZ, 3.0, rate)[:, 0])  # three hop boundaries crossed at once
    first, last = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert (first["end_s"], first["label"]) == (5.5, "low_tone")
    assert last["end_s"] == 8.5 and last["skipped"] == 2 and listener.windows == 2


@pytest.mark.parametrize("content", [b"", b"not an onnx model" * 50, "truncated"])
def test_unloadable_model_is_one_line_error(tone_models, tmp_path, capsys, content):
    bad = tmp_path / "bad.onnx"
    data = Path(tone_models["image"]).read_bytes()
    bad.write_bytes(data[: len(data) // 2] if content == "truncated" else content)
    with pytest.raises(ModelFileError, match="bad.onnx: not a loadable ONNX model"):
        Classifier(bad)
    assert main(["--model", str(bad), "--file", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("edge.listen: error:") and len(err.strip().splitlines()) == 1 and "bad.onnx" in err


def test_model_without_metadata_is_refused(tmp_path, capsys):
    bare = image_model(tmp_path / "bare.onnx", with_metadata=False)
    with pytest.raises(ModelMetadataError, match="bare.onnx: not exported by"):
        Classifier(bare)
    assert main(["--model", str(bare), "--file", str(bare)]) == 1
    assert "bare.onnx" in capsys.readouterr().err


def test_missing_model_file(tmp_path, capsys):
    assert main(["--model", str(tmp_path / "nope.onnx"), "--file", "x.wav"]) == 1
    assert "nope.onnx: no such model file" in capsys.readouterr().err


@pytest.mark.parametrize("name, content", [("noise.wav", b"RIFF garbage"), ("missing.flac", None)])
def test_unreadable_audio_is_one_line_error(tone_models, tmp_path, capsys, name, content):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    assert main(["--model", str(tone_models["image"]), "--file", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("edge.listen: error:") and name in err and len(err.strip().splitlines()) == 1


def test_samples_that_are_not_finite_are_refused_with_the_file_named(tone_models, tmp_path, capsys):
    """A WAV of NaN samples used to be classified as a confident label; now it is an error naming the file."""
    bad = tmp_path / "nan.wav"
    wave = tone(LOW_HZ, 5.0, 44100)[:, 0]
    wave[1000:2000] = np.nan
    sf.write(str(bad), wave, 44100, subtype="FLOAT")
    good = write_clip(tmp_path / "good.wav", LOW_HZ)
    code = main(["--model", str(tone_models["image"]), "--file", str(bad), str(good), "--json"])
    out, err = capsys.readouterr()
    assert code == 1 and "nan.wav: holds non-finite samples" in err
    assert [json.loads(line)["label"] for line in out.splitlines()] == ["low_tone"]  # the good file still runs


def test_a_truncated_wav_is_reported_not_classified_silently(tone_models, tmp_path, capsys):
    full = write_clip(tmp_path / "full.wav", LOW_HZ)
    data = full.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: len(data) // 2])
    assert main(["--model", str(tone_models["image"]), "--file", str(cut)]) == 1
    err = capsys.readouterr().err
    assert "cut.wav: truncated" in err and "50%" in err
    streamed = tmp_path / "streamed.wav"  # a recorder writing to a pipe leaves the length unknown (0xFFFFFFFF)
    at = data.index(b"data") + 4
    streamed.write_bytes(data[:at] + b"\xff\xff\xff\xff" + data[at + 4:])
    code, [window], _ = listen_json(capsys, "--model", tone_models["image"], "--file", streamed)
    assert code == 0 and window["label"] == "low_tone"


def band_db(x, rate, low, high):
    power, freqs = np.abs(np.fft.rfft(x)) ** 2, np.fft.rfftfreq(len(x), 1 / rate)
    return 10 * np.log10(power[(freqs > low) & (freqs < high)].mean())


@pytest.mark.parametrize("delay", [14, -7, 0])
def test_stereo_is_aligned_before_it_is_averaged(tmp_path, delay):
    """A spaced microphone pair: the right channel `delay` samples later. A plain average cuts a comb of
    notches (15 dB at 1.7 kHz for 0.3 ms at 48 kHz); the aligned downmix keeps the spectrum flat."""
    rate, x = 48000, np.random.default_rng(0).standard_normal(48000).astype(np.float32) * 0.1
    right = np.roll(x, delay) * 0.9
    assert channel_delay(x, right, 48) == delay and channel_delay(right, x, 48) == -delay
    path = tmp_path / "pair.wav"
    sf.write(str(path), np.stack([x, right], axis=1), rate, subtype="FLOAT")
    mono, read_rate = load_audio(path)
    assert read_rate == rate and mono.shape == x.shape
    notch = 48000 / (2 * abs(delay)) if delay else 1700
    assert abs(band_db(mono, rate, 0.95 * notch, 1.05 * notch) - band_db(x, rate, 0.95 * notch, 1.05 * notch)) < 1.5
    if delay == 14:
        plain = np.stack([x, right], axis=1).mean(axis=1)
        assert band_db(plain, rate, 0.95 * notch, 1.05 * notch) < band_db(x, rate, 0.95 * notch, 1.05 * notch) - 10


def test_downmix_passes_mono_and_silent_channels_through():
    x = tone(LOW_HZ, 1.0, 8000)[:, 0]
    assert np.array_equal(downmix(x[:, None], 8000), x)
    assert np.allclose(downmix(np.stack([x, np.zeros_like(x)], axis=1), 8000), x / 2)
    with pytest.raises(ValueError, match="samples, channels"):
        downmix(x, 8000)


def test_declip_redraws_the_peaks_a_converter_clipped():
    """Two tones 1.6 dB too loud for the converter: every peak is held flat at full scale. Redrawn, the
    error against the true waveform falls by 10 dB, no redrawn sample is inside the clip level, and
    none is more than MAX_PEAK_BOOST_DB above it."""
    rate = 22050
    t = np.arange(rate) / rate
    true = (0.9 * np.sin(2 * np.pi * 440 * t) + 0.3 * np.sin(2 * np.pi * 1234 * t)).astype(np.float32)
    recorded = np.clip(true, -1, 1)
    starts, stops, levels = clipped_runs(recorded)
    assert len(starts) > 100 and set(levels) == {1.0, -1.0} and (stops - starts >= 3).all()
    redrawn = declip(recorded)

    def error_db(x):
        return 10 * np.log10(np.mean((x - true) ** 2) / np.mean(true ** 2))

    assert error_db(redrawn) < error_db(recorded) - 10
    was_clipped = np.abs(recorded) == 1.0
    assert (np.abs(redrawn[was_clipped]) >= 1.0).all()
    assert np.abs(redrawn).max() <= 10 ** (MAX_PEAK_BOOST_DB / 20) + 1e-6
    assert np.array_equal(redrawn[~was_clipped], recorded[~was_clipped])


def test_the_log_mel_model_hears_clipped_peaks_redrawn_and_audionet_as_recorded(tone_models):
    clipped = np.clip(tone(HIGH_HZ, 5.0, 32000, amplitude=2.0)[:, 0], -1, 1)
    image, waveform = Classifier(tone_models["image"]), Classifier(tone_models["waveform"])
    assert np.array_equal(image.features(clipped, 32000)[0], image.frontend(declip(clipped), 32000))
    assert not np.array_equal(image.features(clipped, 32000)[0], image.frontend(clipped, 32000))
    assert not waveform.scales_itself  # exported before AudioNet scaled its own input: the edge does it
    as_recorded = normalize_peak(audionet_input(clipped, 32000, waveform.sample_rate, waveform.clip_seconds))
    assert np.array_equal(waveform.features(clipped, 32000)[0], as_recorded)


def test_declip_leaves_what_is_not_clipped_alone():
    x = tone(LOW_HZ, 1.0, 8000)[:, 0]
    assert declip(x) is x  # peaks of a sine: never three equal samples
    silent = np.zeros(800, np.float32)
    assert declip(silent) is silent and declip(np.zeros(0, np.float32)).size == 0
    held = np.r_[np.ones(5), np.linspace(1, -0.5, 40)].astype(np.float32)  # flat at the window's edge
    assert np.array_equal(declip(held), held)  # no samples before it to draw a peak through: left as is


def test_live_windows_with_non_finite_samples_are_counted_and_the_stream_goes_on(tone_models, capsys):
    rate = 8000
    listener = Listener(Classifier(tone_models["waveform"]), rate, parse_args(["--model", "m", "--json"]))
    broken = tone(LOW_HZ, 5.0, rate)[:, 0]
    broken[100] = np.inf
    listener.push(broken)
    listener.push(tone(LOW_HZ, 5.0, rate)[:, 0])  # the next window is clean again
    first, second = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert (first["status"], first["label"], first["invalid"]) == ("invalid", None, 1)
    assert (second["status"], second["label"]) == ("ok", "low_tone")
    assert "invalid windows 1" in listener.summary()


def test_unknown_device_is_one_line_error(tone_models, capsys):
    assert main(["--model", str(tone_models["image"]), "--device", "no-such-device-xyz", "--seconds", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("edge.listen: error:") and len(err.strip().splitlines()) == 1


def test_bad_arguments_exit_with_usage(capsys):
    for argv in (["--file"], ["--model", "m.onnx", "--hop", "0"], ["--model", "m.onnx", "--smooth", "-1"],
                 ["--file", "clip.wav", "--seconds", "1"]):
        with pytest.raises(SystemExit) as exit_info:
            parse_args(argv)
        assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--smooth: must be positive" in err and "--seconds stops the microphone" in err


def test_ctrl_c_stops_a_run_over_files_with_the_summary_of_what_it_classified(tone_models, tmp_path, capsys,
                                                                              monkeypatch):
    import edge.listen as listen

    clips = []
    for name in ("a.wav", "b.wav"):
        sf.write(tmp_path / name, np.zeros(8000 * 6, np.float32), 8000)
        clips.append(str(tmp_path / name))
    classify_file = listen.classify_file

    def interrupted_at_the_second(listener, path):
        if path.name == "b.wav":
            raise KeyboardInterrupt
        classify_file(listener, path)

    monkeypatch.setattr(listen, "classify_file", interrupted_at_the_second)
    assert main(["--model", str(tone_models["waveform"]), "--file", *clips, "--json"]) == 130
    assert capsys.readouterr().err.startswith("windows 2")  # a.wav's windows at 5 and 6 s, then the summary


def test_files_and_folders_are_classified_in_order(tone_models, tmp_path, capsys):
    folder = tmp_path / "clips"
    folder.mkdir()
    write_clip(folder / "b_high.flac", HIGH_HZ, rate=48000)
    write_clip(folder / "a_low.ogg", LOW_HZ, seconds=6.0, rate=16000)
    (folder / "notes.txt").write_text("not audio")  # ignored: not an audio file name
    single = write_clip(tmp_path / "single.wav", HIGH_HZ)
    code, windows, err = listen_json(capsys, "--model", tone_models["image"], "--file", single, folder)
    assert code == 0, err
    assert [(Path(w["file"]).name, w["end_s"], w["label"]) for w in windows] == [
        ("single.wav", 5.0, "high_tone"), ("a_low.ogg", 5.0, "low_tone"), ("a_low.ogg", 6.0, "low_tone"),
        ("b_high.flac", 5.0, "high_tone")]
    assert "windows 4; latency per window median" in err
    assert main(["--model", str(tone_models["image"]), "--file", str(folder)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:3] for line in lines] == [["a_low.ogg", "5.0s", "low_tone"],
                                                    ["a_low.ogg", "6.0s", "low_tone"],
                                                    ["b_high.flac", "5.0s", "high_tone"]]


def test_bad_file_in_a_folder_is_reported_and_skipped(tone_models, tmp_path, capsys):
    (tmp_path / "a_broken.wav").write_bytes(b"RIFF garbage")
    write_clip(tmp_path / "b_low.wav", LOW_HZ)
    code, windows, err = listen_json(capsys, "--model", tone_models["waveform"], "--file", tmp_path)
    assert code == 1 and [w["label"] for w in windows] == ["low_tone"]
    assert "edge.listen: error:" in err and "a_broken.wav: not a readable audio file" in err


def test_folder_without_audio_is_an_error(tone_models, tmp_path, capsys):
    assert main(["--model", str(tone_models["image"]), "--file", str(tmp_path)]) == 1
    assert f"{tmp_path}: folder holds no audio files" in capsys.readouterr().err


def test_default_models_prefer_three_melcnn_seeds_then_two_then_one_then_audionet(tone_models, tmp_path,
                                                                                  monkeypatch, capsys):
    with pytest.raises(ModelFileError, match="no --model given and no default model in .*export one"):
        default_models(tmp_path)
    (tmp_path / "audionet-int8.onnx").write_bytes(Path(tone_models["waveform"]).read_bytes())
    assert default_models(tmp_path) == [tmp_path / "audionet-int8.onnx"]
    (tmp_path / "melcnn-int8.onnx").write_bytes(Path(tone_models["image"]).read_bytes())
    assert default_models(tmp_path) == [tmp_path / "melcnn-int8.onnx"]
    (tmp_path / "melcnn-seed1-int8.onnx").write_bytes(Path(tone_models["image"]).read_bytes())
    assert default_models(tmp_path) == [tmp_path / "melcnn-int8.onnx", tmp_path / "melcnn-seed1-int8.onnx"]
    (tmp_path / "melcnn-seed2-int8.onnx").write_bytes(Path(tone_models["image"]).read_bytes())
    assert default_models(tmp_path) == [tmp_path / f"melcnn{seed}-int8.onnx" for seed in ("", "-seed1", "-seed2")]
    monkeypatch.setattr(listen, "MODELS_DIR", tmp_path)
    clip = write_clip(tmp_path / "low.wav", LOW_HZ)
    code, [window], _ = listen_json(capsys, "--file", clip)  # no --model: the three log-mel stand-ins run
    assert code == 0 and window["label"] == "low_tone" and window["frontend_ms"] is not None


def test_the_quick_start_labels_the_bundled_examples_with_the_shipped_melcnn_seeds(capsys):
    """The README's main command: no --model means the three shipped MelCNN seeds (int8), and at least two of
    the three example clips (fold 5, named <class>-<ESC-50 file>) get their own class as the label (the three are
    right on about five in six fold-5 clips; the README says which example they miss and what they hear)."""
    examples = listen.MODELS_DIR.parent / "examples"
    models = default_models()
    assert models == [listen.MODELS_DIR / f"melcnn{seed}-int8.onnx" for seed in ("", "-seed1", "-seed2")]
    metas = [Classifier(model).meta for model in models]
    assert [meta["model_name"] for meta in metas] == ["melcnn"] * 3
    assert metas[0] != metas[1] != metas[2] != metas[0]  # three trainings, not one file thrice
    code, windows, err = listen_json(capsys, "--file", examples)
    assert code == 0, err
    expected = {clip.name: clip.name.split("-")[0] for clip in examples.glob("*.ogg")}
    assert len(expected) == 3 and sorted(Path(w["file"]).name for w in windows) == sorted(expected)
    assert sum(w["label"] == expected[Path(w["file"]).name] for w in windows) >= 2


def test_models_built_alike_share_one_input_per_window(tone_models, monkeypatch):
    """A pair of seeds runs the front end once: members with the same front-end parameters share its output,
    while a waveform model beside them gets its own input."""
    image, again, waveform = (Classifier(tone_models[kind]) for kind in ("image", "image", "waveform"))
    calls = []
    for member in (image, again, waveform):
        monkeypatch.setattr(member, "features", lambda wave, rate, f=member.features: calls.append(1) or f(wave, rate))
    pair = averaged([image, again, waveform])
    inputs = pair.features(tone(HIGH_HZ, 5.0, 22050)[:, 0], 22050)
    assert len(calls) == 2 and inputs[0] is inputs[1] and inputs[2].shape != inputs[0].shape
    assert averaged([image]) is image


def test_two_models_are_averaged_on_each_window(tone_models, tmp_path, capsys):
    clip = write_clip(tmp_path / "high.wav", HIGH_HZ)
    singles = [listen_json(capsys, "--model", m, "--file", clip, "--top-k", "3")[1][0] for m in tone_models.values()]
    code, [pair], _ = listen_json(capsys, "--model", *tone_models.values(), "--file", clip, "--top-k", "3")
    assert code == 0 and pair["label"] == "high_tone"
    probability = {label: np.mean([next(t["probability"] for t in w["top"] if t["label"] == label) for w in singles])
                   for label in CLASSES}
    assert {t["label"]: t["probability"] for t in pair["top"]} == pytest.approx(probability, abs=1e-3)


def test_models_of_different_classes_cannot_be_averaged(tone_models, tmp_path, capsys):
    import onnx

    other = tmp_path / "other.onnx"
    proto = onnx.load(str(tone_models["image"]))
    for prop in proto.metadata_props:
        if prop.key == "classes":
            prop.value = json.dumps(["a", "b", "c"])
    onnx.save(proto, str(other))
    assert main(["--model", str(tone_models["waveform"]), str(other), "--file", str(other)]) == 1
    assert "only models of the same classes" in capsys.readouterr().err


def test_edge_runs_without_torch_librosa_or_portaudio(tone_models, tmp_path):
    """`--file` must work with the `edge` extra only: no torch, no librosa, and sounddevice left unimported."""
    clip = write_clip(tmp_path / "low.ogg", LOW_HZ, seconds=5.0, rate=22050)
    code = ("import sys, edge.listen as l; rc = l.main(sys.argv[1:]);"
            "print(rc, sorted(m for m in ('torch', 'librosa', 'sounddevice', 'onnx') if m in sys.modules))")
    for model in tone_models.values():
        run = subprocess.run([sys.executable, "-c", code, "--model", str(model), "--file", str(clip), "--json"],
                             cwd=REPO, capture_output=True, text=True, check=True)
        *windows, verdict = run.stdout.strip().splitlines()
        assert verdict == "0 []" and json.loads(windows[0])["label"] == "low_tone"


def test_low_memory_sessions_give_the_same_probabilities(tone_models, tmp_path, capsys):
    wave = tone(LOW_HZ, 5.0, 44100)[:, 0]
    for model in tone_models.values():
        assert Classifier(model, low_memory=True).predict(wave, 44100) == pytest.approx(
            Classifier(model).predict(wave, 44100), abs=1e-6)
    clip = write_clip(tmp_path / "low.wav", LOW_HZ)
    code, [window], _ = listen_json(capsys, "--model", tone_models["image"], "--file", clip, "--low-memory")
    assert code == 0 and window["label"] == "low_tone"


def test_low_memory_by_default_only_for_large_model_files(tone_models, tmp_path):
    small = Path(tone_models["image"])
    large = tmp_path / "large.onnx"
    with open(large, "wb") as f:
        f.truncate(int(listen.LOW_MEMORY_ABOVE_MB * 1e6) + 1)
    assert not listen.wants_low_memory(small, None) and listen.wants_low_memory(large, None)
    assert listen.wants_low_memory(small, True) and not listen.wants_low_memory(large, False)
