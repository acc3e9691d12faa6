"""What every benchmark shares: the timing loop, and what it records about the machine while it measures."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from edge.classifier import ModelFileError
from edge.listen import default_models
from edge.provenance import host

REPO = Path(__file__).resolve().parents[1]  # the repository root, for every benchmark's default paths


def durations(fn, repeats: int, warmup: int = 0) -> list:
    """Seconds taken by each of ``repeats`` calls ``fn(i)``, after ``warmup`` untimed calls."""
    for i in range(warmup):
        fn(i)
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    return times


def median_p95_ms(seconds: list) -> dict:
    """Median and 95th percentile of durations in seconds, in milliseconds (3 decimals)."""
    ms = 1000 * np.asarray(seconds)
    return {"median_ms": round(float(np.median(ms)), 3), "p95_ms": round(float(np.percentile(ms, 95)), 3)}


def shown_path(path: Path) -> str:
    """A file as a report records it: relative to the repository, else its name alone (never a host path)."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else path.name


def machine(**versions) -> dict:
    """The CPU, platform and library versions (``versions`` adds more), and how busy the machine was."""
    return {**host(numpy=np.__version__, **versions), "load_average_1min": os.getloadavg()[0],
            "training_processes": training_processes()}


def training_processes() -> list:
    """Training runs on this machine and their state (T = stopped): the numbers are only fair with none running."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().decode(errors="replace").split("\0")
            state = (cmdline.parent / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        cmd = " ".join([Path(argv[0]).name, *argv[1:]]).strip()  # the interpreter's name, not its host path
        if any(f"train.{recipe}" in cmd for recipe in ("audionet", "melcnn", "resnet")):
            found.append({"pid": int(cmdline.parent.name), "state": state, "command": cmd[:120]})
    return found


def model_files(text: str) -> tuple:
    """``--models`` entry: one ONNX file, or several joined by '+' whose probabilities are averaged on each
    window (as ``edge.listen --model A B`` runs them)."""
    return tuple(Path(part) for part in text.split("+"))


def model_names(models: list) -> list:
    """Each ``--models`` entry's name in the report: its files' stems, with as many parent folders as it takes to
    tell the entries apart (two runs' ``model.int8.onnx`` would otherwise overwrite each other's results)."""
    if not models:
        return []
    deepest = max(len(f.parts) for files in models for f in files)
    for depth in range(1, deepest + 1):
        names = ["+".join("/".join(f.with_suffix("").parts[-depth:]) for f in files) for files in models]
        if len(set(names)) == len(names):
            return names
    repeated = sorted({"+".join(map(str, files)) for files in models
                       if sum(other == files for other in models) > 1})
    raise ValueError(f"{', '.join(repeated) or 'an entry'} given twice")


def shipped_models(folder: Path) -> list:
    """What the benchmarks measure by default, as ``--models`` entries: every model in ``folder`` (edge/models)
    alone, then the listener's default set when it averages several."""
    models = [(path,) for path in sorted(folder.glob("*.onnx"))]
    try:
        default = tuple(default_models(folder))
    except ModelFileError:
        return models
    return models + [default] if len(default) > 1 else models
