"""The metadata contract of an exported ONNX model: written by export, read by the edge."""
from __future__ import annotations

import json

FORMAT_VERSION = "1"
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
WAVEFORM = "waveform"
LOG_MEL_IMAGE = "log_mel_image"
REQUIRED = ("format_version", "model_name", "classes", "input_kind", "sample_rate", "clip_seconds",
            "frontend", "normalisation", "test_accuracy", "commit")


class ModelMetadataError(ValueError):
    """An ONNX file without the metadata this project needs; the message names the file."""


def encode(**values) -> dict:
    """String key/values for ``metadata_props`` (non-strings as JSON)."""
    missing = [k for k in REQUIRED if k not in values and k != "format_version"]
    if missing:
        raise ValueError(f"metadata lacks {missing}")
    values["format_version"] = FORMAT_VERSION
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}


def decode(props: dict, source="model") -> dict:
    """Parsed metadata; raises ModelMetadataError naming ``source`` if a key is missing or bad."""
    missing = [k for k in REQUIRED if k not in props]
    if missing:
        raise ModelMetadataError(f"{source}: not exported by `python -m export.to_onnx` "
                                 f"(metadata lacks {', '.join(missing)})")
    if props["format_version"] != FORMAT_VERSION:
        raise ModelMetadataError(f"{source}: metadata format {props['format_version']!r}, "
                                 f"this edge reads {FORMAT_VERSION!r}")
    out = {}
    for key, value in props.items():
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    if out["input_kind"] not in (WAVEFORM, LOG_MEL_IMAGE):
        raise ModelMetadataError(f"{source}: unknown input_kind {out['input_kind']!r}")
    return out
