"""Write files so that a reader never sees half of one: a temporary name in the same folder, then rename.

The one helper every writer in the project uses (checkpoints, caches, ONNX files, reports, plots).
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def staged(path):
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(data, path, compact: bool = False) -> None:
    """Write ``data`` as JSON to ``path`` atomically: indented, or ``compact`` on one line (large arrays)."""
    text = json.dumps(data, separators=(",", ":")) if compact else json.dumps(data, indent=2)
    with staged(path) as tmp:
        Path(tmp).write_text(text + "\n")
