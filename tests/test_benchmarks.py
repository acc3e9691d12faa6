"""benchmarks/training_speed.py: its synthetic ESC-50 and the JSON it writes from a real (tiny) run."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

import benchmarks.training_speed as training_speed
from benchmarks.measuring import training_processes
from edge.provenance import cpu_features
from train.data.esc50 import read_clips


def test_synthetic_esc50_has_the_layout_and_fold_sizes(tmp_path):
    clips = read_clips(training_speed.synthetic_esc50(tmp_path / "ESC-50", classes=3, per_fold=2, seconds=0.5))
    assert len(clips) == 3 * 2 * 5 and all(c.path.is_file() for c in clips)
    assert {c.fold: sum(d.fold == c.fold for d in clips) for c in clips} == {f: 6 for f in range(1, 6)}
    assert sorted({c.target for c in clips}) == [0, 1, 2]


@pytest.mark.slow
def test_training_speed_reports_each_stage(tmp_path):
    out = tmp_path / "speed.json"
    assert training_speed.main(["resnet", "--classes", "2", "--per-fold", "1", "--device", "cpu", "--workers", "0",
                                "--out", str(out),
                                "--", "--head-epochs", "1", "--epochs", "2", "--batch-size", "4"]) == 0
    result = json.loads(out.read_text())
    assert result["model"] == "resnet50" and result["clips_per_epoch"] == 2 * 4  # folds 1-3 train, 4 validates
    assert [(s["stage"], s["epochs"]) for s in result["stages"]] == [("head", 1), ("all", 2)]
    assert all(s["clips_per_s"] > 0 for s in result["stages"]) and result["wall_time_s"] > 0
    assert "--weights" in result["recipe_args"] and result["test_accuracy"] is None
    assert result["device"] == result["hardware"]["cpu"] and isinstance(result["hardware"]["cpu_features"], list)


def test_model_cost_counts_parameters_and_multiply_accumulates():
    from torch import nn

    from benchmarks.model_cost import cost

    conv = nn.Conv1d(1, 4, kernel_size=3, bias=False)  # 4 filters x 3 taps at each of 98 output positions
    assert cost(conv, (1, 100)) == {"parameters": 12, "macs_per_window": 4 * 3 * 98, "input_shape": [1, 100]}


def test_edge_benchmark_times_the_front_end_and_inference_of_each_shipped_model(tone_models, tmp_path, monkeypatch):
    import benchmarks.edge as edge_bench

    models = tmp_path / "models"
    models.mkdir()
    for name, path in tone_models.items():
        (models / f"{name}.onnx").write_bytes(Path(path).read_bytes())
    monkeypatch.setattr(edge_bench, "MODELS", models)
    monkeypatch.setattr(edge_bench, "REPO", tmp_path)
    monkeypatch.setattr(edge_bench, "EXAMPLES", Path(__file__).resolve().parents[1] / "edge" / "examples")
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    out = tmp_path / "edge.json"
    assert edge_bench.main(["--repeats", "3", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["models"]) == {"image", "waveform"} and report["machine"]["logical_cpus"] >= 1
    for entry in report["models"].values():
        for threads in ("threads_1", "threads_2"):
            parts = entry[threads]
            assert {"frontend", "inference", "window"} <= set(parts) and parts["window"]["repeats"] == 3
            assert 0 < parts["frontend"]["median_ms"] and 0 < parts["inference"]["median_ms"]
        assert entry["listener_peak_rss_mb"] > 10 and entry["target"]["limit_ms"] == 10.0


def test_edge_benchmark_measures_the_listeners_default_pair_beside_its_members(tone_models, tmp_path, monkeypatch):
    import benchmarks.edge as edge_bench

    models = tmp_path / "models"
    models.mkdir()
    for name in ("melcnn-int8", "melcnn-seed1-int8"):
        (models / f"{name}.onnx").write_bytes(Path(tone_models["image"]).read_bytes())
    monkeypatch.setattr(edge_bench, "MODELS", models)
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    out = tmp_path / "edge.json"
    assert edge_bench.main(["--repeats", "3", "--out", str(out)]) == 0
    entries = json.loads(out.read_text())["models"]
    assert list(entries) == ["melcnn-int8", "melcnn-seed1-int8", "melcnn-int8+melcnn-seed1-int8"]
    pair = entries["melcnn-int8+melcnn-seed1-int8"]
    assert pair["file"] == "melcnn-int8.onnx+melcnn-seed1-int8.onnx"
    assert pair["bytes"] == 2 * entries["melcnn-int8"]["bytes"] and pair["listener_peak_rss_mb"] > 10


def test_edge_benchmark_measures_the_models_it_is_given_and_names_a_missing_one(tone_models, tmp_path, capsys):
    import benchmarks.edge as edge_bench

    candidate = tmp_path / "run" / "model.int8.onnx"
    candidate.parent.mkdir()
    candidate.write_bytes(Path(tone_models["image"]).read_bytes())
    out = tmp_path / "edge.json"
    assert edge_bench.main(["--models", str(candidate), str(tmp_path / "nothing.onnx"), "--out", str(out)]) == 2
    assert "nothing.onnx" in capsys.readouterr().err and not out.exists()

    assert edge_bench.main(["--models", str(candidate), "--repeats", "2", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert list(report["models"]) == ["model.int8"]
    assert report["models"]["model.int8"]["file"] == "model.int8.onnx"  # outside the repository: no host path
    assert report["command"] == "python -m benchmarks.edge --models model.int8.onnx"
    assert report["models"]["model.int8"]["threads_2"]["window"]["repeats"] == 2


def test_export_benchmark_measures_every_int8_variant(fake_esc50, tmp_path):
    """benchmarks/export.py on fresh AudioNet weights: each variant's size, latency and operators, no accuracy."""
    import benchmarks.export as export_bench

    out = tmp_path / "export.json"
    assert export_bench.main(["--models", "audionet", "--data", str(fake_esc50), "--threads", "1",
                              "--audionet-repeats", "2", "--out", str(out)]) == 0
    report = json.loads(out.read_text())["models"]["audionet"]
    assert set(report["variants"]) == {"fp32", *export_bench.STATIC, "dynamic"} and not report["trained"]
    assert report["calibration_data"] == "2 training clips" and "test fold" in report["evaluation_data"]
    for name, variant in report["variants"].items():
        assert variant["test_accuracy"] is None and variant["latency_ms"]["1"] > 0 and variant["bytes"] > 0
        expected = "ConvInteger" if name == "dynamic" else "QLinearConv" if name != "fp32" else "FusedConv"
        assert expected in variant["onnxruntime_operators"], (name, variant["onnxruntime_operators"])


def test_training_processes_are_found_and_named_without_the_interpreter_path():
    """Benchmarks record them in committed JSON: the command names the interpreter, not where it lives."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "train.melcnn", "--seeds", "7"])
    try:
        [found] = [p for p in training_processes() if p["pid"] == sleeper.pid]
    finally:
        sleeper.kill()
        sleeper.wait()
    assert found["command"].split()[0] == Path(sys.executable).name
    assert found["command"].endswith("train.melcnn --seeds 7") and found["state"] in "RSD"


def test_the_cpu_features_that_decide_speed_are_read_from_x86_flags_and_arm_features():
    x86 = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512_vnni\n"
    assert cpu_features(x86) == ["avx2", "avx512f", "avx512_vnni", "avx512_bf16"]
    assert cpu_features("flags\t: fpu sse avx2\n") == ["avx2"]  # a host that trains in fp32
    assert cpu_features("Features\t: fp asimd asimddp\n") == ["asimddp"]  # a Raspberry Pi 5


def test_feature_benchmark_times_each_step_over_the_cache_it_builds(fake_esc50, tmp_path):
    import benchmarks.features as features

    out = tmp_path / "features.json"
    status = features.main(["--data", str(fake_esc50), "--out", str(out), "--items", "3", "--windows", "3",
                            "--cached-items", "5", "--precompute-runs", "1", "--jobs", "1"])
    report = json.loads(out.read_text())
    assert status == (0 if report["all_targets_met"] else 1)  # timings are reported, never asserted
    for name in ("frontend_window", "on_the_fly_item", "cached_item"):
        assert report["results"][name]["median_s"] > 0
    assert report["results"]["precompute_all"]["clips"] == 10 and set(report["targets"]) == set(features.TARGETS_S)


def test_stft_benchmark_times_both_ffts_in_turn_and_leaves_the_front_end_on_scipys(tmp_path):
    import scipy.fft

    import benchmarks.stft as stft_bench
    import edge.frontend

    out = tmp_path / "stft.json"
    assert stft_bench.main(["--rounds", "2", "--calls", "2", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    for part in ("frontend", "window_at_2_threads"):
        assert report[part]["numpy"]["median_ms"] > 0 and report[part]["scipy"]["median_ms"] > 0
        assert report[part]["numpy_over_scipy"] > 0
    assert report["models"] == "+".join(f"edge/models/melcnn{seed}-int8.onnx" for seed in ("", "-seed1", "-seed2"))
    assert report["max_probability_difference"] < 1e-3  # the same spectrum, rounded alike
    assert edge.frontend.rfft is scipy.fft.rfft
