"""ONNX export (export/to_onnx.py): freshly initialised models, run folders written here."""
import json
from pathlib import Path
import os
import shutil

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

import export.to_onnx as to_onnx
from edge.classifier import Classifier, ModelFileError
from edge.frontend import FrontEnd
from edge.metadata import LOG_MEL_IMAGE, WAVEFORM, decode
from train.audionet import AudioNet
from train.resnet import SpecResNet50

CLASSES = ["low_tone", "high_tone"]
FAST = ["--latency-repeats", "2", "--threads", "1"]


def make_run(folder, model_name, model, model_kwargs, input_spec, classes=CLASSES, split="book"):
    """A training run folder as train/engine.py writes it: best.pt and metrics.json."""
    folder.mkdir(parents=True)
    torch.save({"model_name": model_name, "model_kwargs": model_kwargs, "state_dict": model.state_dict(),
                "classes": classes, "input": input_spec, "epoch": 3, "valid_accuracy": 0.5}, folder / "best.pt")
    (folder / "metrics.json").write_text(json.dumps(
        {"model": model_name, "split": split, "seed": 0, "commit": "abc123def456", "test_accuracy": 0.625}))
    return folder


def audionet_run(folder, classes=CLASSES, sample_rate=8000, pooling="mean", normalize_peak=False):
    torch.manual_seed(0)
    kwargs = {"n_classes": len(classes), "depth": 5, "sample_rate": sample_rate, "pooling": pooling,
              "normalize_peak": normalize_peak}
    spec = {"kind": WAVEFORM, "sample_rate": sample_rate, "clip_seconds": 5.0, "frontend": None}
    return make_run(folder, "audionet", AudioNet(**kwargs), kwargs, spec, classes)


@pytest.fixture(scope="module")
def audionet_export(tmp_path_factory, fake_esc50):
    """(run folder, exit code) of one export of a fresh AudioNet that scales its own input (--normalize-peak),
    verified on the fake dataset."""
    run = audionet_run(tmp_path_factory.mktemp("runs") / "audionet-book-seed0", normalize_peak=True)
    return run, to_onnx.main([str(run), "--data", str(fake_esc50), *FAST])


def test_audionet_export_verifies_and_describes_itself(audionet_export, fake_esc50):
    run, code = audionet_export
    assert code == 0
    onnx.checker.check_model(str(run / "model.onnx"))
    classifier = Classifier(run / "model.onnx")
    meta = classifier.meta
    assert meta["classes"] == CLASSES and meta["model_name"] == "audionet" and meta["precision"] == "fp32"
    assert (meta["input_kind"], meta["sample_rate"], meta["clip_seconds"]) == (WAVEFORM, 8000, 5.0)
    assert meta["frontend"] is None and meta["normalisation"] == {"peak_dbfs": -6.0}  # the graph scales its input
    assert classifier.scales_itself
    quiet = np.random.default_rng(0).standard_normal(40000).astype(np.float32) * 0.01
    assert np.allclose(classifier.predict(quiet, 8000), classifier.predict(quiet * 50, 8000), atol=1e-5)
    assert (meta["test_accuracy"], meta["commit"]) == (0.625, "abc123def456")
    report = json.loads((run / "model.report.json").read_text())
    assert report["passed"] and report["fp32"]["parity_vs_torch"]["top1_agreement"] == 1.0
    assert report["fp32"]["parity_vs_torch"]["max_abs_logit_diff"] <= 1e-3
    assert "test fold 5" in report["verification_data"] and str(fake_esc50) in report["verification_data"]
    assert report["fp32"]["bytes"] == (run / "model.onnx").stat().st_size


def test_a_16_khz_audionet_exports_and_the_edge_feeds_it_16_khz_windows(tmp_path, fake_esc50):
    run = audionet_run(tmp_path / "audionet-book-seed0", sample_rate=16000)
    assert to_onnx.main([str(run), "--data", str(fake_esc50), *FAST]) == 0
    classifier = Classifier(run / "model.onnx")
    assert classifier.sample_rate == 16000 and classifier.session.get_inputs()[0].shape[1:] == [1, 80000]
    wave = np.random.default_rng(0).standard_normal(5 * 44100).astype(np.float32) * 0.1
    features = classifier.features(wave, 44100)
    model = to_onnx.Run.load(run).build_model()
    with torch.no_grad():
        expected = model(torch.from_numpy(features)).softmax(-1)[0].numpy()
    assert features.shape == (1, 1, 80000) and np.allclose(classifier.infer(features), expected, atol=1e-5)


def test_mean_plus_max_pooling_exports_with_parity_and_quantises(tmp_path, fake_esc50):
    run = audionet_run(tmp_path / "audionet-book-seed0", pooling="mean+max")
    # An untrained net: its int8 accuracy is chance either way, so the gate is off here. The gate has its own
    # test (test_int8_accuracy_gate_keeps_fp32_and_drops_int8), and trained recipes pass it in test_pipeline.
    assert to_onnx.main([str(run), "--data", str(fake_esc50), "--int8", "--max-int8-drop", "100", *FAST]) == 0
    report = json.loads((run / "model.report.json").read_text())
    assert report["passed"] and report["fp32"]["parity_vs_torch"]["max_abs_logit_diff"] <= 1e-3
    assert "ReduceMax" in {node.op_type for node in onnx.load(str(run / "model.onnx")).graph.node}
    assert Classifier(run / "model.int8.onnx").predict(np.zeros(8000, np.float32), 8000).shape == (len(CLASSES),)


def test_batch_axis_is_dynamic(audionet_export):
    run, _ = audionet_export
    session = Classifier(run / "model.onnx").session
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 1, 40000)).astype(np.float32)
        assert session.run(["logits"], {"input": x})[0].shape == (batch, len(CLASSES))


def test_metadata_round_trip(audionet_export):
    run, _ = audionet_export
    props = {p.key: p.value for p in onnx.load(str(run / "model.onnx")).metadata_props}
    assert decode(props, "model.onnx") == Classifier(run / "model.onnx").meta


def test_exported_files_carry_no_paths_of_the_exporting_machine(audionet_export):
    """The exporter notes a stack trace per node (this checkout's and the venv's paths); they are dropped."""
    run, _ = audionet_export
    proto = onnx.load(str(run / "model.onnx"))
    assert proto.graph.node and all(len(node.metadata_props) == 0 for node in proto.graph.node)
    assert str(Path(to_onnx.__file__).resolve().parents[1]).encode() not in (run / "model.onnx").read_bytes()


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_damaged_onnx_error_names_the_file(audionet_export, tmp_path, damage):
    run, _ = audionet_export
    data = (run / "model.onnx").read_bytes()
    bad = tmp_path / f"{damage}.onnx"
    bad.write_bytes(data[:len(data) // 2] if damage == "truncated" else os.urandom(4096))
    with pytest.raises(ModelFileError, match=str(bad)):
        Classifier(bad)


def test_perturbed_onnx_fails_verification_and_is_not_written(tmp_path, fake_esc50, monkeypatch, capsys):
    """A wrong bias in the exported graph: exit 1, a failing report, and no model file left behind."""
    export_unchanged = to_onnx.to_onnx

    def export_perturbed(*args, **kwargs):
        proto = export_unchanged(*args, **kwargs)
        bias = next(t for t in proto.graph.initializer if list(t.dims) == [len(CLASSES)])
        bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + 0.01, bias.name))
        return proto

    monkeypatch.setattr(to_onnx, "to_onnx", export_perturbed)
    run = audionet_run(tmp_path / "run")
    assert to_onnx.main([str(run), "--data", str(fake_esc50), *FAST]) == 1
    assert "ONNX and PyTorch disagree" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == ["best.pt", "metrics.json", "model.report.json"]
    report = json.loads((run / "model.report.json").read_text())
    assert not report["passed"]
    assert report["fp32"]["parity_vs_torch"]["max_abs_logit_diff"] == pytest.approx(0.01, abs=1e-4)


def test_no_dataset_verifies_on_synthetic_inputs(tmp_path, monkeypatch):
    monkeypatch.delenv("ESC50_DIR", raising=False)
    run = audionet_run(tmp_path / "run")
    out = tmp_path / "exported" / "net.onnx"
    assert to_onnx.main([str(run), "--out", str(out), *FAST]) == 0
    report = json.loads((tmp_path / "exported" / "net.report.json").read_text())
    assert report["verification_data"].startswith("synthetic") and report["fp32"]["test_accuracy"] is None
    assert Classifier(out).meta["model_name"] == "audionet"


def test_threads_must_be_positive_integers(tmp_path, capsys):
    run = audionet_run(tmp_path / "run")
    with pytest.raises(SystemExit):
        to_onnx.main([str(run), "--threads", "0,2"])
    assert "--threads" in capsys.readouterr().err
    assert to_onnx.parse_args([str(run), "--threads", "2,1,2"]).threads == (1, 2)


def test_bad_checkpoint_error_names_the_file(tmp_path, capsys):
    run = audionet_run(tmp_path / "run")
    (run / "best.pt").write_bytes(b"not a checkpoint")
    assert to_onnx.main([str(run), *FAST]) == 2
    assert str(run / "best.pt") in capsys.readouterr().err
    assert not (run / "model.onnx").exists()


def test_int8_has_the_metadata_and_runs(tmp_path, fake_esc50):
    run = audionet_run(tmp_path / "run")  # untrained: the accuracy gate is off (see above); the file is checked
    assert to_onnx.main([str(run), "--int8", "--data", str(fake_esc50), "--max-int8-drop", "100", *FAST]) == 0
    onnx.checker.check_model(str(run / "model.int8.onnx"))
    fp32, int8 = Classifier(run / "model.onnx"), Classifier(run / "model.int8.onnx")
    assert int8.meta["precision"] == "int8"
    assert {k: v for k, v in int8.meta.items() if k != "precision"} == \
           {k: v for k, v in fp32.meta.items() if k != "precision"}
    ops = {node.op_type for node in onnx.load(str(run / "model.int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    report = json.loads((run / "model.report.json").read_text())["int8"]
    assert report["bytes"] < (run / "model.onnx").stat().st_size
    assert report["quantisation"]["format"] == "QDQ" and report["quantisation"]["per_channel"]
    assert report["calibration_data"].startswith("4 training clips")
    assert set(report["latency_ms"]) == {"1"} and report["latency_ms"]["1"] > 0
    fp32_ms = json.loads((run / "model.report.json").read_text())["fp32"]["latency_ms"]["1"]
    assert report["speedup_vs_fp32"]["1"] == pytest.approx(fp32_ms / report["latency_ms"]["1"])
    assert report["targets"]["accuracy_met"] is True and report["targets"]["min_speedup"] == 1.5
    assert report["gate"]["clips"] == "ESC-50 validation fold 4 (2 clips)"
    assert report["test_accuracy_drop_points"] == pytest.approx(100 * (
        json.loads((run / "model.report.json").read_text())["fp32"]["test_accuracy"] - report["test_accuracy"]))


@pytest.mark.parametrize("split, gate_folds", [("book", {4}), ("cv5", {2, 3, 4})])
def test_int8_gate_never_sees_the_test_fold(tmp_path, fake_esc50, split, gate_folds):
    """The int8 settings pass or fail on the validation fold (cv splits: training clips not used to calibrate);
    the test fold is only reported."""
    run = to_onnx.Run.load(make_run(tmp_path / "run", "audionet", AudioNet(n_classes=2, depth=5), {}, {},
                                    split=split))
    clips = to_onnx.dataset_clips(run, fake_esc50, calibration_per_class=1)
    assert {c.fold for c in clips.test} == {5} and {c.fold for c in clips.calibration} == {1}  # first per class
    assert {c.fold for c in clips.gate} == gate_folds and not set(clips.calibration) & set(clips.gate)


def test_dynamic_int8_quantises_the_convolutions(audionet_export, tmp_path):
    """The dynamic baseline of benchmarks/export.py: ConvInteger nodes, same outputs shape, close logits."""
    from export.quantize import quantize_dynamic_int8

    run, _ = audionet_export
    out = tmp_path / "dynamic.onnx"
    assert quantize_dynamic_int8(run / "model.onnx", out)["mode"] == "dynamic"
    assert "ConvInteger" in {node.op_type for node in onnx.load(str(out)).graph.node}
    x = np.random.default_rng(0).standard_normal((2, 1, 40000)).astype(np.float32)
    fp32 = Classifier(run / "model.onnx").session.run(["logits"], {"input": x})[0]
    int8 = Classifier(out).session.run(["logits"], {"input": x})[0]
    assert int8.shape == fp32.shape and np.abs(int8 - fp32).max() < 0.1 * np.abs(fp32).max()


def test_int8_can_keep_the_first_convolutions_in_fp32(audionet_export, fake_esc50, tmp_path, capsys):
    from export.quantize import TooManyFp32Convs, quantize_int8

    run, _ = audionet_export
    windows = np.random.default_rng(0).standard_normal((4, 1, 40000)).astype(np.float32)
    out = tmp_path / "first-fp32.onnx"
    assert quantize_int8(run / "model.onnx", out, windows, fp32_convs=1)["fp32_convs"] == 1
    graph = onnx.load(str(out)).graph
    produced_by = {output: node.op_type for node in graph.node for output in node.output}
    convs = [node for node in graph.node if node.op_type == "Conv"]
    assert [[produced_by.get(name) for name in conv.input[:2]] for conv in convs] == \
        [["Mul", None]] + [["DequantizeLinear", "DequantizeLinear"]] * 3  # M5: the input layer stays fp32,
    first_conv = next(i for i, node in enumerate(graph.node) if node.op_type == "Conv")
    assert "QuantizeLinear" not in {node.op_type for node in graph.node[:first_conv]}  # and so does the level step
    with pytest.raises(TooManyFp32Convs, match="cannot keep 9 convolutions in fp32, it has 4"):
        quantize_int8(run / "model.onnx", tmp_path / "too-many.onnx", windows, fp32_convs=9)
    copy = shutil.copytree(run, tmp_path / "copy")
    assert to_onnx.main([str(copy), "--int8", "--data", str(fake_esc50), "--int8-fp32-convs", "9", *FAST]) == 2
    assert "--int8-fp32-convs: " in capsys.readouterr().err and not (copy / "model.int8.onnx").exists()
    with pytest.raises(SystemExit):
        to_onnx.parse_args([str(run), "--int8", "--int8-fp32-convs", "-1"])
    assert "--int8-fp32-convs -1: must be 0 or more" in capsys.readouterr().err
    for flag in ("--max-clips", "--calibration-per-class", "--latency-repeats"):
        with pytest.raises(SystemExit):
            to_onnx.parse_args([str(run), flag, "0"])
        assert f"{flag} 0: must be 1 or more" in capsys.readouterr().err


def test_an_audionet_on_raw_levels_leaves_the_scaling_to_the_edge(tmp_path, fake_esc50):
    run = audionet_run(tmp_path / "raw")
    assert to_onnx.main([str(run), "--data", str(fake_esc50), *FAST]) == 0
    classifier = Classifier(run / "model.onnx")
    assert classifier.meta["normalisation"] is None and not classifier.scales_itself
    graph = onnx.load(str(run / "model.onnx")).graph
    assert graph.node[0].op_type == "Conv"  # nothing before the input layer


def test_int8_accuracy_gate_keeps_fp32_and_drops_int8(tmp_path, fake_esc50):
    run = audionet_run(tmp_path / "run")
    (run / "model.int8.onnx").write_bytes(b"int8 model of an earlier export")
    assert to_onnx.main([str(run), "--int8", "--data", str(fake_esc50), "--max-int8-drop", "-200", *FAST]) == 1
    assert (run / "model.onnx").is_file() and not (run / "model.int8.onnx").exists()
    assert not json.loads((run / "model.report.json").read_text())["passed"]


@pytest.mark.slow
def test_resnet50_export_carries_the_front_end(tmp_path, fake_esc50):
    torch.manual_seed(0)
    kwargs = {"n_classes": len(CLASSES), "weights": None}
    frontend = FrontEnd()
    spec = {"kind": LOG_MEL_IMAGE, "sample_rate": frontend.sample_rate, "clip_seconds": 5.0,
            "frontend": frontend.to_json()}
    run = make_run(tmp_path / "run", "resnet50", SpecResNet50(**kwargs), kwargs, spec)
    assert to_onnx.main([str(run), "--data", str(fake_esc50), *FAST]) == 0
    meta = Classifier(run / "model.onnx").meta
    assert meta["input_kind"] == LOG_MEL_IMAGE
    assert FrontEnd.from_json(json.dumps(meta["frontend"])) == frontend
    assert meta["normalisation"] == {"mean": list(frontend.mean), "std": list(frontend.std)}


@pytest.mark.realdata
def test_audionet_export_on_real_test_fold(tmp_path):
    data = os.environ.get("ESC50_DIR")
    if not data:
        pytest.skip("set ESC50_DIR to an ESC-50 folder")
    from train.data.esc50 import class_names, read_clips

    run = audionet_run(tmp_path / "run", classes=class_names(read_clips(data)))
    assert to_onnx.main([str(run), "--data", data, "--max-clips", "20", *FAST]) == 0
    report = json.loads((run / "model.report.json").read_text())
    assert "test fold 5" in report["verification_data"] and report["fp32"]["test_accuracy"] is not None
