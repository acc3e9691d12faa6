"""Static int8 quantisation of an exported model (onnxruntime.quantization, QDQ, per-channel weights)."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_dynamic, quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process

from edge.metadata import INPUT_NAME

METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
           "percentile": CalibrationMethod.Percentile}
ACTIVATIONS = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}


class TooManyFp32Convs(ValueError):
    """``fp32_convs`` asks for more convolutions than the graph has."""


class WindowReader(CalibrationDataReader):
    """Feeds calibration windows one at a time (batch of one, as the edge runs)."""

    def __init__(self, windows: np.ndarray):
        self.windows = windows
        self.rewind()

    def get_next(self):
        x = next(self._next, None)
        return None if x is None else {INPUT_NAME: x[None]}

    def rewind(self):
        self._next = iter(self.windows)


def quantize_int8(fp32_path, out_path, calibration: np.ndarray, method: str = "minmax",
                  activations: str = "uint8", reduce_range: bool = False, per_channel: bool = True,
                  fp32_convs: int = 0) -> dict:
    """Write the static int8 (QDQ) version of ``fp32_path`` to ``out_path``; returns the settings used.

    ``calibration`` holds model inputs (windows, ...) from training clips; the graph is first
    optimised and shape-inferred by ``quant_pre_process`` as onnxruntime recommends. The first
    ``fp32_convs`` convolutions (in graph order) stay in fp32, and so does what the graph computes before
    the first (AudioNet's level normalisation): a raw-waveform network's input layer is the one that
    quantisation hurts most, and an 8-bit waveform in front of it would undo the point.
    """
    settings = {"mode": "static", "format": "QDQ", "per_channel": per_channel, "weights": "int8",
                "activations": activations, "reduce_range": reduce_range, "calibration_method": method,
                "calibration_windows": len(calibration), "fp32_convs": fp32_convs}
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        prepare(fp32_path, prepared)
        fp32_nodes = []
        if fp32_convs:
            nodes = onnx.load(str(prepared)).graph.node
            convs = [i for i, node in enumerate(nodes) if node.op_type == "Conv"]
            if fp32_convs > len(convs):
                raise TooManyFp32Convs(f"{fp32_path}: cannot keep {fp32_convs} convolutions in fp32, "
                                       f"it has {len(convs)}")
            fp32_nodes = [node.name for node in nodes[:convs[0]]] + [nodes[i].name for i in convs[:fp32_convs]]
        quantize_static(str(prepared), str(out_path), WindowReader(calibration), quant_format=QuantFormat.QDQ,
                        per_channel=per_channel, reduce_range=reduce_range,
                        activation_type=ACTIVATIONS[activations], weight_type=QuantType.QInt8,
                        calibrate_method=METHODS[method], nodes_to_exclude=fp32_nodes)
    return settings


def prepare(fp32_path, prepared_path) -> None:
    """onnxruntime's recommended pre-processing (graph optimisation and ONNX shape inference).

    Its symbolic shape inference, meant for dynamic shapes, is skipped: it cannot shape ReduceMax with
    opset 18's axes input (AudioNet's mean+max pooling), and ONNX's own inference covers these CNNs.
    """
    quant_pre_process(str(fp32_path), str(prepared_path), skip_symbolic_shape=True)


def quantize_dynamic_int8(fp32_path, out_path) -> dict:
    """Dynamic int8 (weights only, activations quantised at run time): the baseline static beats."""
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        prepare(fp32_path, prepared)
        quantize_dynamic(str(prepared), str(out_path), per_channel=True, weight_type=QuantType.QInt8)
    return {"mode": "dynamic", "per_channel": True, "weights": "int8"}
