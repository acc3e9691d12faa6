"""int8 choices measured: fp32 vs static QDQ variants vs dynamic int8, for AudioNet and ResNet-50.

    python -m benchmarks.export [--audionet-run RUN] [--resnet-run RUN] [--data DIR] [--threads 1,2]

Each model (a training run folder, else freshly initialised weights, which time the same) is exported
with export.to_onnx and quantised with export/quantize.py in several ways. For every variant the
result holds the file size, the median onnxruntime CPU latency per window at batch 1 for each thread
count (variants timed in turns of 10 calls), top-1 agreement and max |logit diff| against fp32, test
accuracy when a trained run and ESC-50 are given, and the operators onnxruntime actually runs after
its graph optimisations (QLinearConv for static QDQ, ConvInteger for dynamic): the reason for the
speed differences. Writes benchmarks/results/export.json, replacing only the models it ran (so each
model can be measured in its own short pause of training).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from benchmarks.measuring import machine
from edge.atomic import write_json
from edge.classifier import Classifier
from edge.frontend import FrontEnd
from edge.metadata import LOG_MEL_IMAGE, WAVEFORM
from export.latency import latency_table
from export.quantize import quantize_dynamic_int8, quantize_int8
from export.to_onnx import (Inputs, Run, accuracy, compare, dataset_clips, logits_onnx, logits_torch, save_onnx,
                            thread_counts, to_onnx)

RESULT = Path(__file__).resolve().parent / "results" / "export.json"
# Variant name: quantize_int8 keyword arguments. The first is export.to_onnx's default format; every variant
# quantises all convolutions, where export.to_onnx keeps the input one in fp32 by default (--int8-fp32-convs 1).
STATIC = {
    "static_qdq_u8act_per_channel": {},
    "static_qdq_s8act_per_channel": {"activations": "int8"},
    "static_qdq_u8act_per_tensor": {"per_channel": False},
    "static_qdq_u8act_reduce_range": {"reduce_range": True},
}
VARIANTS = {"audionet": list(STATIC), "resnet50": ["static_qdq_u8act_per_channel"]}
FRESH = {  # model name: (model_kwargs, input spec) of the freshly initialised stand-in for a run
    "audionet": ({"n_classes": 50, "depth": 11, "sample_rate": 16000, "pooling": "mean+max"},  # the recipe's
                 {"kind": WAVEFORM, "sample_rate": 16000, "clip_seconds": 5.0, "frontend": None}),
    "resnet50": ({"n_classes": 50, "weights": None},
                 {"kind": LOG_MEL_IMAGE, "sample_rate": FrontEnd().sample_rate, "clip_seconds": 5.0,
                  "frontend": FrontEnd().to_json()}),
}


def fresh_run(name: str) -> Run:
    """A Run of freshly initialised weights (seed 0), as if a training run had saved them."""
    import torch

    from train.models import build_model

    torch.manual_seed(0)
    kwargs, spec = FRESH[name]
    model = build_model(name, **kwargs)
    checkpoint = {"model_name": name, "model_kwargs": kwargs, "state_dict": model.state_dict(),
                  "classes": [f"class_{i:02d}" for i in range(kwargs["n_classes"])], "input": spec}
    return Run(Path(f"<freshly initialised {name}>"), checkpoint, {"split": "book", "commit": "untrained"})


def model_inputs(run: Run, classifier: Classifier, data, trained: bool, max_clips: int | None):
    """(evaluation inputs, calibration inputs): ESC-50 test fold / training clips, else synthetic noise."""
    clips = dataset_clips(run, data, calibration_per_class=2 if trained else 1)
    if clips is None:
        return Inputs.synthetic(classifier, 16, seed=0), Inputs.synthetic(classifier, 16, seed=1)
    test = clips.test[:max_clips if trained else 32]  # accuracy of untrained weights means nothing
    return (Inputs.from_clips(classifier, test, f"ESC-50 test fold of {clips.folder} ({len(test)} clips)"),
            Inputs.from_clips(classifier, clips.calibration, f"{len(clips.calibration)} training clips"))


def ort_operators(path: Path, folder: Path) -> dict:
    """Operator counts of the graph onnxruntime runs (after its level-99 optimisations) on this CPU."""
    import onnx
    import onnxruntime as ort

    optimised = folder / f"{path.stem}.optimised.onnx"
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(optimised)
    options.log_severity_level = 3
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return dict(Counter(node.op_type for node in onnx.load(str(optimised)).graph.node).most_common())


@dataclass(frozen=True)
class Settings:
    """What ``python -m benchmarks.export`` was asked to measure; built once by :func:`parse_args`."""

    runs: dict  # model name: run folder, or None for freshly initialised weights
    models: tuple
    data: Path | None
    max_clips: int | None
    threads: tuple
    repeats: dict  # model name: timed calls per variant
    out: Path
    command: str


def benchmark_model(name: str, args: Settings, folder: Path) -> dict:
    """Export ``name`` (run or fresh), quantise it every way, and measure every variant."""
    run_dir = args.runs[name]
    run = fresh_run(name) if run_dir is None else Run.load(run_dir)
    trained = run_dir is not None
    model = run.build_model()
    fp32 = folder / f"{name}.onnx"
    save_onnx(to_onnx(model, run.input_shape(), run.metadata(precision="fp32")), fp32)
    evaluation, calibration = model_inputs(run, Classifier(fp32), args.data, trained, args.max_clips)
    paths, settings = {"fp32": fp32}, {"fp32": {"mode": "fp32"}}
    for variant in VARIANTS[name]:
        paths[variant] = folder / f"{name}.{variant}.onnx"
        settings[variant] = quantize_int8(fp32, paths[variant], calibration.x, **STATIC[variant])
    paths["dynamic"] = folder / f"{name}.dynamic.onnx"
    settings["dynamic"] = quantize_dynamic_int8(fp32, paths["dynamic"])

    reference = logits_onnx(Classifier(fp32, max(args.threads)).session, evaluation.x)
    latency, other_load = latency_table(paths, evaluation.x, args.threads, args.repeats[name])
    variants = {}
    for variant, path in paths.items():
        logits = reference if variant == "fp32" else logits_onnx(Classifier(path, max(args.threads)).session,
                                                                 evaluation.x)
        variants[variant] = {
            "settings": settings[variant], "bytes": path.stat().st_size, "latency_ms": latency[variant],
            "speedup_vs_fp32": {n: latency["fp32"][n] / ms for n, ms in latency[variant].items()},
            "vs_fp32": compare(reference, logits),
            "test_accuracy": accuracy(logits, evaluation.targets) if trained else None,
            "onnxruntime_operators": ort_operators(path, folder)}
    return {"source": str(run.path), "trained": trained, "evaluation_data": evaluation.source,
            "calibration_data": calibration.source, "repeats": args.repeats[name],
            "other_processes_cpu_share_while_timing": other_load,
            "fp32_parity_vs_torch": compare(logits_torch(model, evaluation.x), reference),
            "variants": variants}


def parse_args(argv) -> Settings:
    p = argparse.ArgumentParser(prog="python -m benchmarks.export", description=__doc__.split("\n\n")[0])
    p.add_argument("--audionet-run", type=Path, help="AudioNet run folder (default: fresh weights)")
    p.add_argument("--resnet-run", type=Path, help="ResNet-50 run folder (default: fresh weights)")
    p.add_argument("--data", type=Path, help="ESC-50 folder (default: the run's, then $ESC50_DIR; else synthetic)")
    p.add_argument("--max-clips", type=int, help="test clips for accuracy of trained runs (default: all)")
    p.add_argument("--threads", type=thread_counts, default=[1, 2], help="onnxruntime thread counts (default 1,2)")
    p.add_argument("--audionet-repeats", type=int, default=50, help="timed calls per AudioNet variant")
    p.add_argument("--resnet-repeats", type=int, default=20, help="timed calls per ResNet-50 variant")
    p.add_argument("--models", default="audionet,resnet50", help="comma-separated subset to run")
    p.add_argument("--out", type=Path, default=RESULT)
    args = p.parse_args(argv)
    models = tuple(args.models.split(","))
    unknown = set(models) - set(VARIANTS)
    if unknown:
        p.error(f"--models: unknown {sorted(unknown)}; choose from {sorted(VARIANTS)}")
    return Settings(runs={"audionet": args.audionet_run, "resnet50": args.resnet_run}, models=models,
                    data=args.data, max_clips=args.max_clips, threads=tuple(args.threads),
                    repeats={"audionet": args.audionet_repeats, "resnet50": args.resnet_repeats}, out=args.out,
                    command=" ".join(["python -m benchmarks.export", *argv]))


def main(argv=None) -> int:
    import onnx
    import onnxruntime
    import torch

    args = parse_args(sys.argv[1:] if argv is None else argv)
    result = {"machine": machine(onnxruntime=onnxruntime.__version__),
              "versions": {"torch": torch.__version__, "onnx": onnx.__version__},
              "latency": "median ms per window, batch 1, onnxruntime CPU, a model's variants in turns of 10 calls",
              "models": {}}
    if args.out.is_file():  # keep the models this call does not measure, if they were measured here
        earlier = json.loads(args.out.read_text())
        if earlier.get("machine", {}).get("cpu") == result["machine"]["cpu"]:
            result["models"] = earlier.get("models", {})
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            print(f"benchmarking {name} ...", file=sys.stderr)
            result["models"][name] = {"command": args.command, "threads": args.threads,
                                      **benchmark_model(name, args, Path(tmp))}
    write_json(result, args.out)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
