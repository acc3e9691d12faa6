"""Export a training run to one self-describing ONNX file, verified against PyTorch.

    python -m export.to_onnx runs/audionet-book-seed0-20260101-120000 --int8

writes RUN_DIR/model.onnx (and model.int8.onnx) plus model.report.json. The file carries everything
the edge needs in its metadata (classes, input kind, front end, normalisation: edge/metadata.py).
Before a file is renamed into place it is checked: onnxruntime and PyTorch must agree on the test
fold of the run (inputs built by edge.classifier, the code the edge runs), else the command exits 1
and leaves no model behind. The int8 file must keep the fp32 accuracy on the run's validation fold (the test
fold is only reported), else it is not written; a cv split has no validation fold, and its gate is the training
clips less the calibration ones, which the model has learnt: it catches a broken quantisation, not a small loss.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.atomic import staged, write_json
from edge.audio import AudioFileError, load_audio
from edge.classifier import Classifier, ModelFileError
from edge.frontend import WAVEFORM_PEAK_DBFS, FrontEnd
from edge.metadata import INPUT_NAME, LOG_MEL_IMAGE, OUTPUT_NAME, WAVEFORM, ModelMetadataError, encode
from edge.provenance import host
from export.evaluate import numbers
from export.latency import latency_table
from train.data.esc50 import DatasetError, parse_splits, read_clips

OPSET = 18
INT8_MIN_SPEEDUP = 1.5  # the latency target for int8 vs fp32 (reported, not enforced: timing is noisy)
CHECKPOINT_KEYS = ("model_name", "model_kwargs", "state_dict", "classes", "input")


class ExportError(RuntimeError):
    """A run folder, checkpoint or dataset that cannot be exported from; the message names the path."""


@dataclass
class Run:
    """A training run folder: its best checkpoint and its metrics."""

    path: Path
    checkpoint: dict
    metrics: dict

    @classmethod
    def load(cls, run_dir) -> "Run":
        import torch

        path = Path(run_dir)
        best, metrics_path = path / "best.pt", path / "metrics.json"
        for f in (best, metrics_path):
            if not f.is_file():
                raise ExportError(f"{f}: missing (is {path} a training run folder?)")
        try:
            checkpoint = torch.load(best, map_location="cpu", weights_only=True)
        except Exception as err:  # pickle, zip and torch errors alike
            raise ExportError(f"{best}: not a readable checkpoint ({err})") from None
        missing = [k for k in CHECKPOINT_KEYS if not isinstance(checkpoint, dict) or k not in checkpoint]
        if missing:
            raise ExportError(f"{best}: checkpoint lacks {missing}")
        try:
            metrics = json.loads(metrics_path.read_text())
        except json.JSONDecodeError as err:
            raise ExportError(f"{metrics_path}: not valid JSON ({err})") from None
        return cls(path, checkpoint, metrics)

    @property
    def input_spec(self) -> dict:
        return self.checkpoint["input"]

    def build_model(self):
        """The trained network in eval mode (pretrained weights are never fetched)."""
        from train.models import model_from_checkpoint

        return model_from_checkpoint(self.checkpoint)

    def input_shape(self) -> tuple:
        """Shape of one window's model input, without the batch axis."""
        spec = self.input_spec
        if spec["kind"] == WAVEFORM:
            return (1, int(round(spec["sample_rate"] * spec["clip_seconds"])))
        return FrontEnd.from_json(spec["frontend"]).image_shape

    def metadata(self, **extra) -> dict:
        """``metadata_props`` for the ONNX file (edge/metadata.py contract) plus ``extra`` keys."""
        spec = self.input_spec
        frontend = FrontEnd.from_json(spec["frontend"]) if spec["kind"] == LOG_MEL_IMAGE else None
        return encode(
            model_name=self.checkpoint["model_name"],
            classes=list(self.checkpoint["classes"]),
            input_kind=spec["kind"],
            sample_rate=int(spec["sample_rate"]),
            clip_seconds=float(spec["clip_seconds"]),
            frontend=None if frontend is None else json.loads(frontend.to_json()),
            normalisation=self.normalisation(frontend),
            test_accuracy=self.metrics.get("test_accuracy"),
            commit=self.metrics.get("commit"),
            **extra,
        )

    def normalisation(self, frontend: FrontEnd | None) -> dict | None:
        """What the edge must know of the input's scaling: a log-mel model's mean and std; for a waveform model,
        the peak its graph scales each window to (train.audionet.AudioNet.normalize_peak), or None, and the edge
        does it."""
        if frontend is not None:
            return {"mean": list(frontend.mean), "std": list(frontend.std)}
        return {"peak_dbfs": WAVEFORM_PEAK_DBFS} if self.checkpoint["model_kwargs"].get("normalize_peak") else None

    def split(self):
        """The run's train/valid/test folds, from the split name in metrics.json."""
        try:
            return parse_splits(self.metrics.get("split", "book"))[0]
        except ValueError as err:
            raise ExportError(f"{self.path / 'metrics.json'}: {err}") from None

    def recorded_data_dir(self):
        """The --data folder the run was trained on (metrics.json, else config.json), or None."""
        config = self.path / "config.json"
        try:
            saved = json.loads(config.read_text()) if config.is_file() else {}
        except json.JSONDecodeError as err:
            raise ExportError(f"{config}: not valid JSON ({err})") from None
        return self.metrics.get("data") or saved.get("data")


def to_onnx(model, example_shape: tuple, metadata: dict):
    """onnx.ModelProto of ``model`` (dynamo exporter, dynamic batch) with ``metadata`` attached."""
    import torch

    example = torch.zeros((2, *example_shape))  # batch 2: a batch of 1 would be specialised away
    program = torch.onnx.export(model, (example,), dynamo=True, opset_version=OPSET, external_data=False,
                                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    proto = program.model_proto
    strip_source_locations(proto)
    set_metadata(proto, metadata)
    return proto


def strip_source_locations(proto) -> None:
    """Drop the exporter's per-node notes (stack traces with this machine's file paths, FX names): they
    tell a user of the file nothing and would publish the exporting host's folders."""
    for node in proto.graph.node:
        del node.metadata_props[:]


def set_metadata(proto, metadata: dict):
    """Replace the ``metadata_props`` of an onnx.ModelProto."""
    del proto.metadata_props[:]
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)


def save_onnx(proto, path: Path):
    """Check and write an onnx.ModelProto (weights inside the file)."""
    import onnx

    onnx.checker.check_model(proto)
    onnx.save_model(proto, str(path))


@dataclass
class Inputs:
    """Model inputs of a set of clips, built by the edge's own front end; ``targets`` None if synthetic."""

    x: np.ndarray
    targets: np.ndarray | None
    source: str

    @classmethod
    def from_clips(cls, classifier: Classifier, clips, source: str) -> "Inputs":
        x = np.concatenate([classifier.features(*load_audio(c.path)) for c in clips])
        return cls(x, np.array([c.target for c in clips]), source)

    @classmethod
    def synthetic(cls, classifier: Classifier, n: int, seed: int) -> "Inputs":
        """Noise bursts with a random spectral tilt, 5 s at 44.1 kHz (no labels)."""
        rng = np.random.default_rng(seed)
        waves = [np.cumsum(rng.standard_normal(220500), dtype=np.float32) * rng.uniform(0, 0.05)
                 + rng.standard_normal(220500).astype(np.float32) * rng.uniform(0.01, 0.5) for _ in range(n)]
        return cls(np.concatenate([classifier.features(w, 44100) for w in waves]), None,
                   f"synthetic noise ({n} clips, no dataset given)")


def logits_onnx(session, x: np.ndarray, batch: int = 16) -> np.ndarray:
    return np.concatenate([session.run([OUTPUT_NAME], {INPUT_NAME: x[i:i + batch]})[0]
                           for i in range(0, len(x), batch)])


def logits_torch(model, x: np.ndarray, batch: int = 16) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return np.concatenate([model(torch.from_numpy(x[i:i + batch])).numpy() for i in range(0, len(x), batch)])


def compare(reference: np.ndarray, other: np.ndarray) -> dict:
    """Max absolute logit difference and top-1 agreement of two (clips, classes) logit arrays."""
    return {"max_abs_logit_diff": float(np.abs(reference - other).max()),
            "top1_agreement": float(np.mean(reference.argmax(1) == other.argmax(1)))}


def accuracy(logits: np.ndarray, targets) -> float | None:
    return None if targets is None else float(np.mean(logits.argmax(1) == targets))


@dataclass(frozen=True)
class ExportClips:
    """The dataset clips an export uses. The test fold is for parity and reported accuracy only; the int8
    gate decides on the run's validation fold (a split without one, such as cv5, gates on its training
    clips less the calibration clips), so the test fold decides nothing."""

    folder: Path
    test: list
    gate: list
    gate_name: str
    calibration: list


def dataset_clips(run: Run, data, calibration_per_class: int) -> ExportClips | None:
    """The clips of the run's split in the first dataset found (--data, the run's data, $ESC50_DIR)."""
    candidates = [data] if data is not None else [run.recorded_data_dir(), os.environ.get("ESC50_DIR")]
    split = run.split()
    for folder in filter(None, candidates):
        try:
            clips = read_clips(folder)
        except DatasetError:
            if data is not None:
                raise
            continue
        train, valid, test = split.select(clips)
        if not test or not train:
            raise DatasetError(f"{folder}: no clips in the test fold or the training folds of split {split.name!r}")
        calibration = per_class(train, calibration_per_class)
        if valid:
            gate, gate_name = valid, f"validation fold {', '.join(map(str, split.valid_folds))}"
        else:
            gate = [c for c in train if c not in calibration]
            gate_name = f"training folds {', '.join(map(str, split.train_folds))} less the calibration clips"
        return ExportClips(Path(folder), test, gate, gate_name, calibration)
    return None


def per_class(clips, n: int) -> list:
    """The first ``n`` clips of every class (calibration set covering all classes)."""
    counts, chosen = {}, []
    for c in clips:
        if counts.get(c.target, 0) < n:
            counts[c.target] = counts.get(c.target, 0) + 1
            chosen.append(c)
    return chosen


def drop_points(before: float | None, after: float | None) -> float | None:
    """Accuracy drop in percentage points, rounded: accuracies are multiples of 1/clips, and 0.5975 - 0.5875
    must count as 1.0 point, not 1.0000001."""
    return None if before is None or after is None else round(100 * (before - after), 6)


class VerificationError(RuntimeError):
    """The exported file does not reproduce the PyTorch model closely enough; carries the report."""

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class ExportConfig:
    """What ``python -m export.to_onnx`` was asked to do; built once by :func:`parse_args`."""

    run_dir: Path
    out: Path  # the fp32 file; the report and the int8 file are named after it
    argv: tuple  # the command line, for the report
    int8: bool = False
    data: Path | None = None
    max_clips: int | None = None
    atol: float = 1e-3
    calibration_per_class: int = 2
    calibration_method: str = "minmax"
    int8_activations: str = "uint8"
    int8_fp32_convs: int = 1  # the input layer: quantised, it cost MelCNN 17 points on fold 4 (docs/experiments.md)
    max_int8_drop: float = 1.0
    threads: tuple = tuple(sorted({1, os.cpu_count() or 1}))  # 1 and all CPUs
    latency_repeats: int = 50


def export(config: ExportConfig) -> dict:
    """Export and verify (and with --int8 quantise); returns the report. Raises VerificationError."""
    import onnx
    import onnxruntime
    import torch

    run = Run.load(config.run_dir)
    model = run.build_model()
    report = {"run": str(run.path), "model_name": run.checkpoint["model_name"], "passed": False,
              "training": {k: run.metrics.get(k) for k in ("test_accuracy", "commit", "split", "seed")},
              "versions": {"torch": torch.__version__, "onnx": onnx.__version__,
                           "onnxruntime": onnxruntime.__version__, "opset": OPSET},
              "command": " ".join(["python -m export.to_onnx", *config.argv]),
              "latency": {"statistic": "median ms per window, batch 1, onnxruntime CPU, models in turns of 10 calls",
                          "threads": config.threads, "repeats": config.latency_repeats,
                          "machine": host(onnxruntime=onnxruntime.__version__)}}
    clips = dataset_clips(run, config.data, config.calibration_per_class)
    with staged(config.out) as tmp:
        save_onnx(to_onnx(model, run.input_shape(), run.metadata(precision="fp32")), tmp)
        classifier = Classifier(tmp, max(config.threads))
        if clips is None:
            print("warning: no ESC-50 folder (--data, the run's data, $ESC50_DIR): verifying on synthetic noise, "
                  "no accuracy", file=sys.stderr)
            data = Inputs.synthetic(classifier, n=8, seed=0)
        else:
            test = clips.test[:config.max_clips]
            data = Inputs.from_clips(classifier, test,
                                     f"ESC-50 test fold {run.split().test_fold} of {clips.folder} ({len(test)} clips)")
        report["verification_data"] = data.source
        reference = logits_torch(model, data.x)
        fp32_logits = logits_onnx(classifier.session, data.x)
        parity = compare(reference, fp32_logits)
        passed = parity["top1_agreement"] == 1.0 and parity["max_abs_logit_diff"] <= config.atol
        report["fp32"] = {"path": str(config.out), "bytes": tmp.stat().st_size,
                          "parity_vs_torch": {**parity, "atol": config.atol, "passed": passed},
                          "torch_test_accuracy": accuracy(reference, data.targets),
                          "test_accuracy": accuracy(fp32_logits, data.targets)}
        if not passed:
            raise VerificationError(f"{config.out}: ONNX and PyTorch disagree (max |logit diff| "
                                    f"{parity['max_abs_logit_diff']:.2e}, atol {config.atol}; top-1 agreement "
                                    f"{parity['top1_agreement']:.1%}); not written", report)
    report["passed"] = True
    paths = {"fp32": config.out}
    if config.int8:
        report["int8"] = export_int8(config, run, data, fp32_logits, clips, report)
        paths["int8"] = Path(report["int8"]["path"])
    add_latency(report, paths, data.x, config)
    return report


def add_latency(report: dict, paths: dict, x: np.ndarray, config: ExportConfig):
    """Time the written models (in turns) and put the medians, speed-up and targets into ``report``."""
    table, report["latency"]["other_processes_cpu_share"] = latency_table(paths, x, config.threads,
                                                                          config.latency_repeats)
    for name, ms in table.items():
        report[name]["latency_ms"] = ms
    if "int8" in table:
        int8 = report["int8"]
        int8["speedup_vs_fp32"] = {n: table["fp32"][n] / ms for n, ms in table["int8"].items()}
        drop = int8["gate"]["accuracy_drop_points"] if "gate" in int8 else None
        int8["targets"] = {"accuracy_met": None if drop is None else drop <= config.max_int8_drop,
                           "min_speedup": INT8_MIN_SPEEDUP,
                           "speedup_met": all(v >= INT8_MIN_SPEEDUP for v in int8["speedup_vs_fp32"].values())}


def export_int8(config: ExportConfig, run: Run, data: Inputs, fp32_logits: np.ndarray, clips: ExportClips | None,
                report: dict) -> dict:
    """Quantise the verified fp32 file; on the gate clips (never the test fold) int8 must stay within
    --max-int8-drop points of fp32. The test fold's accuracy is reported beside."""
    import onnx

    from export.quantize import TooManyFp32Convs, quantize_int8

    path = config.out.with_suffix(".int8.onnx")
    fp32 = Classifier(config.out, max(config.threads))
    if clips is None:
        calibration, gate = Inputs.synthetic(fp32, n=16, seed=1), None
    else:
        calibration = Inputs.from_clips(fp32, clips.calibration, f"{len(clips.calibration)} training clips, "
                                                                 f"{config.calibration_per_class} per class")
        gate_clips = clips.gate[:config.max_clips]
        gate = Inputs.from_clips(fp32, gate_clips, f"ESC-50 {clips.gate_name} ({len(gate_clips)} clips)")
    with staged(path) as tmp:
        try:
            settings = quantize_int8(config.out, tmp, calibration.x, config.calibration_method, config.int8_activations,
                                     fp32_convs=config.int8_fp32_convs)
        except TooManyFp32Convs as err:
            raise ExportError(f"--int8-fp32-convs: {err}") from None
        proto = onnx.load_model(str(tmp))
        set_metadata(proto, run.metadata(precision="int8"))
        save_onnx(proto, tmp)
        int8 = Classifier(tmp, max(config.threads)).session
        int8_logits = logits_onnx(int8, data.x)
        test_accuracy = accuracy(int8_logits, data.targets)
        result = {"path": str(path), "bytes": tmp.stat().st_size, "quantisation": settings,
                  "calibration_data": calibration.source, "parity_vs_fp32": compare(fp32_logits, int8_logits),
                  "test_accuracy": test_accuracy,
                  "test_accuracy_drop_points": drop_points(report["fp32"]["test_accuracy"], test_accuracy)}
        if gate is None:
            return result
        fp32_gate, int8_gate = (accuracy(logits_onnx(s, gate.x), gate.targets) for s in (fp32.session, int8))
        drop = drop_points(fp32_gate, int8_gate)
        result["gate"] = {"clips": gate.source, "fp32_accuracy": fp32_gate, "int8_accuracy": int8_gate,
                          "accuracy_drop_points": drop, "max_accuracy_drop_points": config.max_int8_drop}
        if drop > config.max_int8_drop:
            report["passed"] = False
            report["int8"] = result
            path.unlink(missing_ok=True)  # an int8 file from an earlier export no longer matches the fp32 one
            raise VerificationError(f"{path}: int8 accuracy on the {clips.gate_name} is {int8_gate:.1%}, {drop:.1f} "
                                    f"points below fp32 (limit {config.max_int8_drop}); not written", report)
    return result


def thread_counts(text: str) -> list:
    """``"2,1,2"`` -> [1, 2] (argparse type of --threads)."""
    return sorted(set(numbers(text, 1, 1024, "positive thread counts")))


def parse_args(argv) -> ExportConfig:
    d = ExportConfig(run_dir=Path(), out=Path(), argv=())
    p = argparse.ArgumentParser(prog="python -m export.to_onnx", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path, help="training run folder holding best.pt and metrics.json")
    p.add_argument("--out", type=Path, help="ONNX file to write (default: RUN_DIR/model.onnx); the report goes "
                   "to FILE.report.json, the int8 model to FILE.int8.onnx")
    p.add_argument("--int8", action="store_true", help="also write a static int8 (QDQ) model")
    p.add_argument("--data", type=Path, help="ESC-50 folder for verification (default: the run's data_dir, "
                   "then $ESC50_DIR; synthetic inputs when there is none)")
    p.add_argument("--max-clips", type=int, help="use the first N test clips and N gate clips only (default: all)")
    p.add_argument("--atol", type=float, default=d.atol, help="largest |logit difference| ONNX vs PyTorch")
    p.add_argument("--calibration-per-class", type=int, default=d.calibration_per_class,
                   help="training-fold clips per class that calibrate the int8 ranges")
    p.add_argument("--calibration-method", choices=("minmax", "entropy", "percentile"), default=d.calibration_method)
    p.add_argument("--int8-activations", choices=("uint8", "int8"), default=d.int8_activations,
                   help="activation type (uint8 suits x86, int8 suits ARM)")
    p.add_argument("--int8-fp32-convs", type=int, default=d.int8_fp32_convs, metavar="N",
                   help="keep the first N convolutions in fp32 (default %(default)s: the input layer, which int8 hurts "
                        "most in both shipped models; 0 quantises every one)")
    p.add_argument("--max-int8-drop", type=float, default=d.max_int8_drop,
                   help="largest accuracy drop int8 vs fp32 on the run's validation fold (training clips "
                        "less calibration when it has none), in percentage points; the test fold is reported, "
                        "never gated on")
    p.add_argument("--threads", type=thread_counts, default=d.threads,
                   help="comma-separated onnxruntime thread counts to time with (default: 1 and all CPUs)")
    p.add_argument("--latency-repeats", type=int, default=d.latency_repeats, help="timed calls per model")
    args = p.parse_args(argv)
    out = args.out or args.run_dir / "model.onnx"
    if out.suffix != ".onnx":
        p.error(f"--out {out}: the file name must end in .onnx")
    if args.int8_fp32_convs < 0:
        p.error(f"--int8-fp32-convs {args.int8_fp32_convs}: must be 0 or more")
    for flag in ("max_clips", "calibration_per_class", "latency_repeats"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} {getattr(args, flag)}: must be 1 or more")
    return ExportConfig(**{**vars(args), "out": out, "argv": tuple(argv), "threads": tuple(args.threads)})


def main(argv=None) -> int:
    config = parse_args(sys.argv[1:] if argv is None else argv)
    report_path = config.out.with_suffix(".report.json")
    try:
        report = export(config)
    except (ExportError, DatasetError, AudioFileError, ModelFileError, ModelMetadataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except VerificationError as err:
        write_json(err.report, report_path)
        print(f"error: {err} (report: {report_path})", file=sys.stderr)
        return 1
    write_json(report, report_path)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
