"""Tiny hand-built ONNX models for the edge tests (onnx helper API; no training, no torch).

Both tell a low tone (300 Hz) from a high tone (3 kHz) and carry the project's metadata, one per
input kind, so the edge code is tested end to end without waiting for a trained model. A third
class, "hum", has a constant logit so that top-k and the uncertainty threshold have something to rank.
"""
from __future__ import annotations

import numpy as np
import onnx
import soundfile as sf
from onnx import TensorProto, helper, numpy_helper

from edge.frontend import FrontEnd, hz_to_mel
from edge.metadata import INPUT_NAME, LOG_MEL_IMAGE, OUTPUT_NAME, WAVEFORM, encode

CLASSES = ["low_tone", "high_tone", "hum"]
LOW_HZ, HIGH_HZ = 300.0, 3000.0


def tone(freq: float, seconds: float, rate: int, channels: int = 1, amplitude: float = 0.3) -> np.ndarray:
    """A sine (frames, channels) float32 with a little noise, so no window is digitally silent."""
    t = np.arange(int(round(seconds * rate))) / rate
    x = amplitude * np.sin(2 * np.pi * freq * t) + 0.003 * np.random.default_rng(0).standard_normal(t.size)
    return np.repeat(x[:, None], channels, axis=1).astype(np.float32)


def write_clip(path, freq: float, seconds: float = 5.0, rate: int = 44100, channels: int = 1, **kw):
    sf.write(str(path), tone(freq, seconds, rate, channels, **kw), rate)
    return path


def metadata(input_kind: str, sample_rate: int, frontend) -> dict:
    return encode(model_name=f"tone-{input_kind}", classes=CLASSES, input_kind=input_kind,
                  sample_rate=sample_rate, clip_seconds=5.0, frontend=frontend,
                  normalisation=None, test_accuracy=None, commit="test")


def save(graph, path, meta: dict | None):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if meta is not None:
        helper.set_model_props(model, meta)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def image_model(path, with_metadata: bool = True):
    """(N, 3, 128, 216) log-mel image -> logits: peak level of the mel bands around each tone."""
    frontend = FrontEnd()
    c, n_mels, n_frames = frontend.image_shape
    top = hz_to_mel(frontend.fmax)
    weights = np.zeros((n_mels, len(CLASSES)), np.float32)
    for column, hz in enumerate((LOW_HZ, HIGH_HZ)):
        centre = int(round(hz_to_mel(hz) / top * (n_mels + 1))) - 1
        weights[centre - 2:centre + 3, column] = 1.0
    graph = helper.make_graph(
        [helper.make_node("ReduceMax", [INPUT_NAME], ["loudest"], axes=[3], keepdims=0),
         helper.make_node("ReduceMean", ["loudest"], ["bands"], axes=[1], keepdims=0),
         helper.make_node("MatMul", ["bands", "weights"], ["scores"]),
         helper.make_node("Add", ["scores", "bias"], [OUTPUT_NAME])],
        "tone_image",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", c, n_mels, n_frames])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", len(CLASSES)])],
        [numpy_helper.from_array(weights, "weights"),
         numpy_helper.from_array(np.array([0, 0, 3.0], np.float32), "bias")])
    meta = metadata(LOG_MEL_IMAGE, frontend.sample_rate, frontend.to_json()) if with_metadata else None
    return save(graph, path, meta)


def waveform_model(path, sample_rate: int = 8000):
    """(N, 1, 40000) waveform -> logits: log energy after a sum (low-pass) and a difference (high-pass) filter."""
    kernels = np.array([[[1.0, 1.0]], [[1.0, -1.0]]], np.float32)  # (out=2, in=1, k=2)
    weights = np.array([[2.0, 0, 0], [0, 2.0, 0]], np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", [INPUT_NAME, "kernels"], ["filtered"]),
         helper.make_node("Mul", ["filtered", "filtered"], ["power"]),
         helper.make_node("ReduceMean", ["power"], ["energy"], axes=[2], keepdims=0),
         helper.make_node("Add", ["energy", "floor"], ["floored"]),
         helper.make_node("Log", ["floored"], ["log_energy"]),
         helper.make_node("MatMul", ["log_energy", "weights"], ["scores"]),
         helper.make_node("Add", ["scores", "bias"], [OUTPUT_NAME])],
        "tone_waveform",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 1, int(5 * sample_rate)])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", len(CLASSES)])],
        [numpy_helper.from_array(kernels, "kernels"),
         numpy_helper.from_array(np.array([1e-6], np.float32), "floor"),
         numpy_helper.from_array(weights, "weights"),
         numpy_helper.from_array(np.array([0, 0, -6.0], np.float32), "bias")])
    return save(graph, path, metadata(WAVEFORM, sample_rate, None))
