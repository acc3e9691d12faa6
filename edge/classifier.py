"""Windowed inference with an exported ONNX model (onnxruntime on CPU; no torch, no librosa).

The model file says what it needs in its metadata (edge/metadata.py): the class names, whether it
takes a raw waveform or a log-mel image, and the front-end parameters. :class:`Classifier` builds
that input from a waveform at any sample rate and returns class probabilities.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edge.audio import declip
from edge.frontend import FrontEnd, audionet_input, normalize_peak
from edge.metadata import INPUT_NAME, LOG_MEL_IMAGE, OUTPUT_NAME, ModelMetadataError, decode


class ModelFileError(ValueError):
    """An ONNX file that is missing, unreadable or not a model this edge can run; names the file."""


def open_session(path, threads: int = 1, low_memory: bool = False):
    """An onnxruntime CPU session for ``path``; ModelFileError instead of onnxruntime's exceptions.

    ``low_memory`` stops at the "extended" graph optimisations: the x86 layout transformation of the
    "all" level copies every convolution weight while the session loads, which nearly doubles the
    peak memory of a large fp32 model (ResNet-50: about 320 MB instead of 190 MB); without it
    inference is 20-40% faster on x86 (benchmarks/results/edge.json).

    The intra-op threads do not spin after a run: the listener runs a model once a second, and threads left
    spinning take the cores from what runs next, the front end's numpy or a second model of a pair (measured:
    two MelCNN sessions in turn took 10-16 ms at 2 threads with spinning, 6.5-7 ms without).
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only; onnxruntime warnings are not ours to show
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if low_memory:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.enable_cpu_mem_arena = False
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as err:  # InvalidProtobuf, Fail, InvalidGraph, ... have no common public base
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelFileError(f"{path}: not a loadable ONNX model ({reason})") from None


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (stable for large logits)."""
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def top_k(probabilities: np.ndarray, classes, k: int = 3) -> list:
    """The ``k`` most probable (label, probability) pairs, most probable first."""
    order = np.argsort(probabilities)[::-1][:k]
    return [(classes[i], float(probabilities[i])) for i in order]


class Classifier:
    """One exported model: ``predict(waveform, rate)`` gives probabilities for its first window."""

    def __init__(self, path, threads: int = 1, low_memory: bool = False):
        self.path = Path(path)
        self.session = open_session(self.path, threads, low_memory)
        source = str(self.path)
        self.meta = decode(self.session.get_modelmeta().custom_metadata_map, source=source)
        self.classes = list(self.meta["classes"])
        self.input_kind = self.meta["input_kind"]
        self.sample_rate = int(self.meta["sample_rate"])
        self.clip_seconds = float(self.meta["clip_seconds"])
        self.frontend = self._frontend(source) if self.input_kind == LOG_MEL_IMAGE else None
        # an AudioNet trained with --normalize-peak scales its own input; the others need the edge to
        self.scales_itself = self.frontend is None and bool(self.meta["normalisation"])
        self._check_signature(source)

    def _frontend(self, source: str) -> FrontEnd:
        params = self.meta["frontend"]
        try:
            return FrontEnd.from_json(params if isinstance(params, str) else json.dumps(params))
        except (TypeError, ValueError) as err:
            raise ModelMetadataError(f"{source}: bad front-end parameters in metadata ({err})") from None

    def _check_signature(self, source: str):
        """The graph must take INPUT_NAME shaped as the metadata says and give one logit per class."""
        inputs = {i.name: i.shape for i in self.session.get_inputs()}
        outputs = {o.name: o.shape for o in self.session.get_outputs()}
        if INPUT_NAME not in inputs or OUTPUT_NAME not in outputs:
            raise ModelMetadataError(f"{source}: expected input {INPUT_NAME!r} and output {OUTPUT_NAME!r}, "
                                     f"found inputs {sorted(inputs)} and outputs {sorted(outputs)}")
        expected = self.features(np.zeros(1, np.float32), self.sample_rate).shape
        declared = inputs[INPUT_NAME]
        fixed = [(d, e) for d, e in zip(declared[1:], expected[1:]) if isinstance(d, int)]
        if len(declared) != len(expected) or any(d != e for d, e in fixed):
            raise ModelMetadataError(f"{source}: input shape {declared} does not match the metadata "
                                     f"({self.input_kind}, expected {list(expected)})")
        n_out = outputs[OUTPUT_NAME][-1]
        if isinstance(n_out, int) and n_out != len(self.classes):
            raise ModelMetadataError(f"{source}: {n_out} outputs but {len(self.classes)} class names")

    def features(self, waveform: np.ndarray, rate: int) -> np.ndarray:
        """The model input (batch of one) for the first window of ``waveform``.

        A log-mel model hears the window with its clipped peaks redrawn (edge.audio.declip); AudioNet, which
        lost 1.5 points on fold 4's clipped recordings with them redrawn, hears it as recorded."""
        if self.frontend is not None:
            x = self.frontend(declip(waveform), rate)
        else:
            x = audionet_input(waveform, rate, self.sample_rate, self.clip_seconds)
            x = x if self.scales_itself else normalize_peak(x)
        return x[None].astype(np.float32, copy=False)

    @property
    def input_recipe(self) -> tuple:
        """What :meth:`features` depends on besides the audio: models with equal recipes take the same input."""
        if self.frontend is not None:
            return (self.input_kind, self.frontend)
        return (self.input_kind, self.sample_rate, self.clip_seconds, self.scales_itself)

    def infer(self, features: np.ndarray) -> np.ndarray:
        """Class probabilities (softmax of the logits) for one model input from :meth:`features`."""
        logits = self.session.run([OUTPUT_NAME], {INPUT_NAME: features})[0]
        return softmax(logits[0])

    def predict(self, waveform: np.ndarray, rate: int) -> np.ndarray:
        """Class probabilities for the first window of ``waveform``, shape (n_classes,)."""
        return self.infer(self.features(waveform, rate))

    def top_k(self, probabilities: np.ndarray, k: int = 3) -> list:
        return top_k(probabilities, self.classes, k)


def check_averageable(members: list) -> None:
    """ModelMetadataError unless every model names the same classes and takes the same window: only then can their
    probabilities be averaged (edge.listen --model A B, export.evaluate)."""
    first = members[0]
    for other in members[1:]:
        if other.classes != first.classes or other.clip_seconds != first.clip_seconds:
            raise ModelMetadataError(f"{other.path}: its classes or window length differ from {first.path}'s; "
                                     "only models of the same classes and window can be averaged")


class Ensemble:
    """Several exported models on the same window, their probabilities averaged: the interface of
    :class:`Classifier` (``features``, ``infer``, ``predict``, ``top_k``), so the listener runs it alike.
    Each model gets its own kind of input (waveform or log-mel image) from the one window; models whose inputs are
    built alike (seeds of one recipe) share it, so a pair of MelCNN seeds costs one front end and two inferences."""

    def __init__(self, members: list):
        check_averageable(members)
        first = members[0]
        self.members = list(members)
        self.classes, self.clip_seconds, self.sample_rate = first.classes, first.clip_seconds, first.sample_rate

    def features(self, waveform: np.ndarray, rate: int) -> list:
        return shared_inputs(self.members, waveform, rate)

    def infer(self, features: list) -> np.ndarray:
        return np.mean([member.infer(x) for member, x in zip(self.members, features)], axis=0)

    def predict(self, waveform: np.ndarray, rate: int) -> np.ndarray:
        return self.infer(self.features(waveform, rate))

    def top_k(self, probabilities: np.ndarray, k: int = 3) -> list:
        return top_k(probabilities, self.classes, k)


def shared_inputs(classifiers: list, waveform: np.ndarray, rate: int) -> list:
    """Each classifier's input for the window; classifiers with the same input recipe share one, built once."""
    built = {}
    for classifier in classifiers:
        if classifier.input_recipe not in built:
            built[classifier.input_recipe] = classifier.features(waveform, rate)
    return [built[classifier.input_recipe] for classifier in classifiers]


def averaged(members: list):
    """One classifier as it is; several as their :class:`Ensemble`."""
    return members[0] if len(members) == 1 else Ensemble(members)
