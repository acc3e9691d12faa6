"""What produced a result: the code's commit and the machine (for metrics, reports and benchmarks).

Lives in edge/, the bottom layer, so that train/, export/ and benchmarks/ share it without importing
each other.
"""
from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def git_commit(*paths: str) -> str | None:
    """HEAD of this repository (``-dirty`` when tracked files, or those under ``paths``, changed), None
    outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO_ROOT,
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *paths],
                               cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("-dirty" if dirty else "")


def proc_cpuinfo() -> str:
    """/proc/cpuinfo, or "" where there is none (not Linux)."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    for line in proc_cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


# The instruction sets that decide the speed of a run here: bf16 training needs AVX512-BF16 or AMX, int8
# inference is fastest with VNNI (x86) or dot-product instructions (ARM); "AMD EPYC" alone names hosts that
# differ by several times in both.
SPEED_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8",
                  "asimddp", "bf16")


def cpu_features(cpuinfo: str | None = None) -> list:
    """Which of SPEED_FEATURES the CPU has, from the flags (x86) or features (ARM) of /proc/cpuinfo."""
    flags = set()
    for line in (proc_cpuinfo() if cpuinfo is None else cpuinfo).splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[1].split())
    return [f for f in SPEED_FEATURES if f in flags]


def host(**versions) -> dict:
    """The CPU and its speed-deciding features, its logical CPUs, the platform and Python; ``versions`` adds
    library versions."""
    return {"cpu": cpu_name(), "cpu_features": cpu_features(), "logical_cpus": os.cpu_count(),
            "platform": platform.platform(), "python": platform.python_version(), **versions}
