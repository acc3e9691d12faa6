"""What the benchmarks record about the machine while they measure (shared by features.py and edge.py)."""
from __future__ import annotations

from pathlib import Path


def training_processes() -> list:
    """Training runs on this machine and their state (T = stopped): the numbers are only fair with none running."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            cmd = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (cmdline.parent / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if "train.audionet" in cmd or "train.resnet" in cmd:
            found.append({"pid": int(cmdline.parent.name), "state": state, "command": cmd.strip()[:120]})
    return found
