"""Edge performance on this machine: per-window latency, listener memory, install size, start-up time.

    python benchmarks/edge.py prepare   # models to time, and a fresh venv with only the `edge` extra
    python benchmarks/edge.py measure   # timings -> benchmarks/results/edge.json (pause training first)

``prepare`` takes the trained models from edge/models/ (resnet50.onnx, resnet50-int8.onnx,
audionet.onnx) or runs/*/model[.int8].onnx; any it does not find it exports from freshly initialised
weights with export.to_onnx (untrained weights time the same as trained ones). The JSON says which.
``measure`` imports no torch: it times the front end and onnxruntime the way edge.listen runs them,
then the listener itself (this checkout's code run by the fresh venv's Python, which has only the
``edge`` extra) for peak RSS and start-up time.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.atomic import write_json  # noqa: E402
from edge.provenance import cpu_name  # noqa: E402
from measuring import training_processes  # noqa: E402

CACHE = REPO / ".cache" / "edge-bench"
VENV = Path("/tmp/edgevenv")
RESULT = REPO / "benchmarks" / "results" / "edge.json"
EXAMPLES = REPO / "edge" / "examples"
MODELS = {  # name: (files in edge/models, run folder prefix, file in the run folder)
    "resnet50_fp32": ("resnet50.onnx", "resnet50-", "model.onnx"),
    "resnet50_int8": ("resnet50-int8.onnx", "resnet50-", "model.int8.onnx"),
    "audionet": ("audionet.onnx", "audionet-", "model.onnx"),
}
TARGETS_MS = {"frontend": 10.0, "resnet50_fp32": 80.0, "resnet50_int8": 40.0, "audionet": 5.0}
TARGET_RSS_MB = 300.0


def trained_model(name: str) -> Path | None:
    """The trained file for ``name``: edge/models first, then the newest run folder that has one."""
    shipped, prefix, filename = MODELS[name]
    if (REPO / "edge" / "models" / shipped).is_file():
        return REPO / "edge" / "models" / shipped
    runs = sorted((REPO / "runs").glob(f"{prefix}*/{filename}"), key=lambda p: p.stat().st_mtime)
    return runs[-1] if runs else None


def export_untrained(name: str, out: Path) -> Path:
    """Export freshly initialised weights (timing only) with the project's exporter."""
    import onnx
    import torch

    from edge.classifier import Classifier
    from edge.frontend import FrontEnd
    from edge.metadata import LOG_MEL_IMAGE, WAVEFORM, encode
    from export.quantize import quantize_int8
    from export.to_onnx import Inputs, save_onnx, set_metadata, to_onnx
    from train.models import build_model

    torch.manual_seed(0)
    classes = [f"class_{i:02d}" for i in range(50)]
    if name == "audionet":
        model, shape = build_model("audionet", n_classes=50, depth=11), (1, 40000)
        meta = dict(input_kind=WAVEFORM, sample_rate=8000, frontend=None, normalisation=None)
    else:
        frontend = FrontEnd()
        model, shape = build_model("resnet50", n_classes=50, weights=None), frontend.image_shape
        meta = dict(input_kind=LOG_MEL_IMAGE, sample_rate=frontend.sample_rate, frontend=json.loads(frontend.to_json()),
                    normalisation={"mean": list(frontend.mean), "std": list(frontend.std)})
    metadata = encode(model_name=name.split("_")[0], classes=classes, clip_seconds=5.0, test_accuracy=None,
                      commit="untrained", precision="fp32", **meta)
    out.parent.mkdir(parents=True, exist_ok=True)
    fp32 = out.with_name(f"{name.split('_')[0]}_fp32.onnx") if name.endswith("int8") else out
    if not fp32.is_file():
        save_onnx(to_onnx(model.eval(), shape, metadata), fp32)
    if name.endswith("int8"):
        calibration = Inputs.synthetic(Classifier(fp32), n=16, seed=1).x
        quantize_int8(fp32, out, calibration)
        proto = onnx.load_model(str(out))
        set_metadata(proto, {**metadata, "precision": "int8"})
        save_onnx(proto, out)
    return out


def prepare(args):
    chosen = {}
    for name in MODELS:
        path = trained_model(name)
        if path is None:
            path = CACHE / f"{name}.onnx"
            if not path.is_file():
                print(f"exporting untrained {name} -> {path}", file=sys.stderr)
                export_untrained(name, path)
            chosen[name] = {"path": str(path), "source": "freshly initialised weights exported with "
                                                          "export.to_onnx (untrained; timing only)"}
        else:
            chosen[name] = {"path": str(path), "source": "trained model"}
    write_json(chosen, CACHE / "models.json")
    if not args.keep_venv or not (VENV / "bin" / "python").exists():
        subprocess.run(["rm", "-rf", str(VENV)], check=True)
        subprocess.run(["python3", "-m", "venv", str(VENV)], check=True)
        start = time.perf_counter()
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", f"{REPO}[edge]"], check=True)
        write_json({"pip_install_s": round(time.perf_counter() - start, 1)}, CACHE / "venv.json")
    print(json.dumps(chosen, indent=2))


def timed(fn, repeats: int, warmup: int = 3) -> dict:
    """Median and p95 wall time of ``fn()`` in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return {"median_ms": round(float(np.median(times)), 3), "p95_ms": round(float(np.percentile(times, 95)), 3),
            "repeats": repeats}


def window(rate: int, seconds: float = 5.0) -> np.ndarray:
    """A 5-s test window: noise with a tone, like a busy microphone."""
    rng = np.random.default_rng(0)
    t = np.arange(int(rate * seconds)) / rate
    return (0.1 * rng.standard_normal(t.size) + 0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def verdict(value: float, limit: float) -> dict:
    return {"value": value, "limit": limit, "passed": value <= limit}


def site_packages_bytes(venv: Path) -> dict:
    """du of the venv's site-packages, in total and per top-level entry (largest first)."""
    site = next(venv.glob("lib/python*/site-packages"))
    sizes = {}
    for entry in site.iterdir():
        files = [entry] if entry.is_file() else [p for p in entry.rglob("*") if p.is_file()]
        sizes[entry.name] = sum(p.stat().st_size for p in files)
    du = subprocess.run(["du", "-sb", str(site)], capture_output=True, text=True, check=True)
    baseline = sum(v for k, v in sizes.items() if k.split("-")[0] in ("pip", "setuptools", "_distutils_hack",
                                                                        "distutils-precedence.pth", "pkg_resources"))
    return {"site_packages": str(site), "du_bytes": int(du.stdout.split()[0]), "du_mb": round(int(du.stdout.split()[0]) / 1e6, 1),
            "without_pip_setuptools_mb": round((int(du.stdout.split()[0]) - baseline) / 1e6, 1),
            "largest": {k: round(v / 1e6, 1) for k, v in sorted(sizes.items(), key=lambda kv: -kv[1])[:8]}}


def child_peak_rss_mb(argv: list, cwd) -> tuple:
    """(peak RSS in MB, exit code) of a command, read from getrusage in a fresh helper process."""
    helper = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode;"
              "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, rc)")
    out = subprocess.run([sys.executable, "-c", helper, *argv], cwd=cwd, capture_output=True, text=True, check=True)
    kib, rc = out.stdout.split()
    return round(int(kib) * 1024 / 1e6, 1), int(rc)


def wall_s(argv: list, cwd, repeats: int) -> dict:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(argv, cwd=cwd, stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return {"median_s": round(float(np.median(times)), 3), "repeats": repeats}


def busy_processes(seconds: float = 1.0, above: float = 10.0) -> list:
    """Other processes using more than ``above`` % of a core over ``seconds``: what else competed for the CPU."""
    def ticks():
        out = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(") ", 1)[1].split()
                out[int(stat.parent.name)] = int(fields[11]) + int(fields[12])  # utime + stime
            except (OSError, IndexError, ValueError):
                continue
        return out
    before = ticks()
    time.sleep(seconds)
    after = ticks()
    hz = os.sysconf("SC_CLK_TCK")
    busy = []
    for pid, t in after.items():
        percent = 100 * (t - before.get(pid, t)) / hz / seconds
        if percent > above and pid != os.getpid():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                continue
            busy.append({"pid": pid, "cpu_percent": round(percent), "command": cmd[:100]})
    return busy


def machine() -> dict:
    import onnxruntime

    return {"cpu": cpu_name(), "cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "numpy": np.__version__, "onnxruntime": onnxruntime.__version__, "load_average_1min": os.getloadavg()[0]}


def measure(args):
    from edge.classifier import Classifier
    from edge.frontend import FrontEnd, audionet_input
    from edge.listen import wants_low_memory

    models = json.loads((CACHE / "models.json").read_text())
    threads = os.cpu_count()
    training = training_processes()
    report = {"command": "python benchmarks/edge.py measure", "machine": machine(),
              "training_processes": training, "other_busy_processes_at_start": busy_processes(),
              "training_paused": all(p["state"] == "T" for p in training),
              "statistic": "per 5-s window, batch 1, onnxruntime CPU; medians and p95 of repeated calls",
              "frontend": {}, "models": {}, "targets": {}}

    frontend = FrontEnd()
    for rate in (44100, 48000, 22050):
        signal = window(rate)  # made once: only the front end is timed
        report["frontend"][f"log_mel_image_from_{rate}_hz"] = timed(lambda: frontend(signal, rate), args.repeats)
    signal = window(44100)
    report["frontend"]["audionet_waveform_from_44100_hz"] = timed(lambda: audionet_input(signal, 44100), args.repeats)

    for name, info in models.items():
        entry = {**info, "bytes": Path(info["path"]).stat().st_size}
        for n in sorted({1, threads}):
            for low_memory in (False, True):
                classifier = Classifier(info["path"], threads=n, low_memory=low_memory)
                x = classifier.features(window(44100), 44100)
                key = f"inference_threads_{n}" + ("_low_memory" if low_memory else "")
                entry[key] = timed(lambda: classifier.infer(x), args.repeats)
        report["models"][name] = entry

    fe = report["frontend"]["log_mel_image_from_44100_hz"]["median_ms"]
    report["targets"]["frontend_ms"] = verdict(fe, TARGETS_MS["frontend"])
    for name in MODELS:  # the listener's graph optimisation for the file; the faster thread count, both shown
        suffix = "_low_memory" if wants_low_memory(Path(models[name]["path"]), None) else ""
        by_threads = {n: report["models"][name][f"inference_threads_{n}{suffix}"]["median_ms"] for n in sorted({1, threads})}
        best = min(by_threads, key=by_threads.get)
        report["targets"][f"{name}_ms"] = {**verdict(by_threads[best], TARGETS_MS[name]), "threads": best,
                                           "median_ms_by_threads": by_threads, "low_memory": bool(suffix)}

    python = str(VENV / "bin" / "python")
    listen = [python, "-m", "edge.listen"]
    report["listener_peak_rss"] = {"what": "edge.listen --file edge/examples/ (3 clips), this checkout run by the "
                                           "fresh edge venv's Python; peak RSS from getrusage"}
    for key, model, flags in (("resnet50_fp32_default", "resnet50_fp32", []),  # --low-memory: file > 50 MB
                              ("resnet50_fp32_no_low_memory", "resnet50_fp32", ["--no-low-memory"]),
                              ("resnet50_int8_default", "resnet50_int8", [])):
        rss, rc = child_peak_rss_mb([*listen, "--model", models[model]["path"], "--file", str(EXAMPLES),
                                     "--json", *flags], cwd=REPO)
        report["listener_peak_rss"][key] = {"flags": flags, "peak_rss_mb": rss, "exit_code": rc}
    fp32_rss = report["listener_peak_rss"]["resnet50_fp32_default"]["peak_rss_mb"]
    report["targets"]["listener_peak_rss_mb_resnet50_fp32"] = verdict(fp32_rss, TARGET_RSS_MB)

    load = "import sys; from edge.classifier import Classifier; Classifier(sys.argv[1])"
    report["startup"] = {"python_m_edge_listen_help": wall_s([*listen, "--help"], REPO, args.process_repeats),
                         "python_startup_only": wall_s([python, "-c", "pass"], REPO, args.process_repeats)}
    for name, info in models.items():
        report["startup"][f"import_and_load_{name}"] = wall_s([python, "-c", load, info["path"]], "/tmp",
                                                              args.process_repeats)
    report["edge_extra_install"] = {"venv": str(VENV), "command": f"python3 -m venv {VENV} && pip install '{REPO}[edge]'",
                                    **json.loads((CACHE / "venv.json").read_text()), **site_packages_bytes(VENV)}
    report["torch_or_librosa_in_edge_venv"] = sorted(p.name for p in next(VENV.glob("lib/python*/site-packages")).iterdir()
                                                     if p.name.split("-")[0].lower() in ("torch", "librosa"))
    report["machine"]["load_average_1min_at_end"] = os.getloadavg()[0]  # other work on the machine skews timings
    report["other_busy_processes_at_end"] = busy_processes()
    write_json(report, RESULT)
    print(json.dumps(report["targets"], indent=2))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("step", choices=("prepare", "measure"))
    p.add_argument("--repeats", type=int, default=30, help="timed calls per measurement")
    p.add_argument("--process-repeats", type=int, default=3, help="timed process starts per measurement")
    p.add_argument("--keep-venv", action="store_true", help="prepare: reuse an existing /tmp/edgevenv")
    args = p.parse_args(argv)
    prepare(args) if args.step == "prepare" else measure(args)


if __name__ == "__main__":
    main()
