"""Validate an ESC-50 folder as downloaded: every listed clip present, labelled consistently, 5 s of 44.1 kHz mono.

Only file headers are read (``soundfile.info`` plus the RIFF size field), so checking all 2000 clips takes
about a second.
"""
from __future__ import annotations

import re
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .esc50 import CLIP_SAMPLES, N_CLASSES, N_FOLDS, SAMPLE_RATE, find_root, read_clips

CLIPS_PER_CLASS = 40
CLIPS_PER_FOLD = 400
NAME_PATTERN = re.compile(r"^(\d+)-[^-]+-[^-]+-(\d+)\.wav$")  # FOLD-SOURCEID-TAKE-TARGET.wav


@dataclass(frozen=True)
class Problem:
    path: Path
    kind: str
    detail: str

    def __str__(self):
        return f"{self.path}: {self.kind}: {self.detail}"


def check_dataset(path, full: bool = True) -> tuple:
    """(clips, problems) for an ESC-50 folder; ``full`` also demands 2000 clips, 40 per class, 400 per fold."""
    root = find_root(path)
    clips = read_clips(root)
    csv_path = root / "meta" / "esc50.csv"
    audio = root / "audio"
    if not audio.is_dir():
        return clips, [Problem(audio, "missing", "no audio/ folder")]
    problems = [p for clip in clips for p in check_clip(clip)]
    problems += check_listing(clips, audio, csv_path)
    if full:
        problems += check_counts(clips, csv_path)
    return clips, problems


def check_clip(clip) -> list:
    """Problems of one listed clip: missing, labels that disagree with its name, unreadable or wrong format."""
    path = clip.path
    if not path.is_file():
        return [Problem(path, "missing", "listed in meta/esc50.csv but not on disk")]
    problems = []
    match = NAME_PATTERN.match(path.name)
    if not match:
        problems.append(Problem(path, "bad name", "expected FOLD-SOURCE-TAKE-TARGET.wav"))
    else:
        if int(match.group(2)) != clip.target:
            problems.append(Problem(path, "label mismatch",
                                    f"filename says target {match.group(2)}, CSV says {clip.target}"))
        if int(match.group(1)) != clip.fold:
            problems.append(Problem(path, "fold mismatch",
                                    f"filename says fold {match.group(1)}, CSV says {clip.fold}"))
    return problems + check_audio(path)


def check_audio(path: Path) -> list:
    """Problems of one file's audio header: not audio, truncated, not 44.1 kHz, not mono, not 220500 samples."""
    import soundfile as sf

    declared, size = riff_declared_size(path), path.stat().st_size
    cut = declared is not None and size < declared
    try:
        info = sf.info(str(path))
    except Exception as err:  # LibsndfileError or RuntimeError, depending on the soundfile version
        if cut:  # a WAV cut inside its header: say so rather than "not audio"
            return [Problem(path, "truncated",
                            f"header declares {declared} bytes, file has {size}; unreadable ({err})")]
        return [Problem(path, "not audio", str(err))]
    problems = []
    if cut:
        problems.append(Problem(path, "truncated", f"header declares {declared} bytes, file has {size}"))
    if info.samplerate != SAMPLE_RATE:
        problems.append(Problem(path, "wrong sample rate", f"{info.samplerate} Hz, expected {SAMPLE_RATE}"))
    if info.channels != 1:
        problems.append(Problem(path, "not mono", f"{info.channels} channels"))
    if info.frames != CLIP_SAMPLES:
        problems.append(Problem(path, "wrong length", f"{info.frames} samples, expected {CLIP_SAMPLES}"))
    return problems


def riff_declared_size(path: Path):
    """Total file size a RIFF/WAVE header promises, or None (not RIFF, or a streaming header)."""
    with open(path, "rb") as f:
        head = f.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    size = struct.unpack("<I", head[4:8])[0]
    return None if size in (0, 0xFFFFFFFF) else size + 8


def check_listing(clips, audio: Path, csv_path: Path) -> list:
    """Wavs on disk that the CSV does not list, rows listed twice, labels out of range or inconsistent."""
    counts = Counter(c.path.name for c in clips)
    problems = [Problem(audio / name, "listed twice", f"{n} rows in {csv_path.name}")
                for name, n in counts.items() if n > 1]
    problems += [Problem(wav, "unlisted", f"not in {csv_path.name}")
                 for wav in sorted(audio.glob("*.wav")) if wav.name not in counts]
    problems += [Problem(c.path, "bad label", f"target {c.target} not in 0..{N_CLASSES - 1}")
                 for c in clips if not 0 <= c.target < N_CLASSES]
    problems += [Problem(c.path, "bad fold", f"fold {c.fold} not in 1..{N_FOLDS}")
                 for c in clips if not 1 <= c.fold <= N_FOLDS]
    names = {}
    for c in clips:
        names.setdefault(c.target, set()).add(c.category)
    problems += [Problem(csv_path, "inconsistent category", f"target {t} is called {sorted(n)}")
                 for t, n in sorted(names.items()) if len(n) > 1]
    return problems


def check_counts(clips, csv_path: Path) -> list:
    """The full dataset's balance: 2000 clips, 40 per class, 400 per fold."""
    expected_total = N_CLASSES * CLIPS_PER_CLASS
    problems = []
    if len(clips) != expected_total:
        problems.append(Problem(csv_path, "wrong count", f"{len(clips)} clips, expected {expected_total}"))
    per_class = Counter(c.target for c in clips)
    problems += [Problem(csv_path, "wrong count", f"class {t} has {per_class[t]} clips, expected {CLIPS_PER_CLASS}")
                 for t in range(N_CLASSES) if per_class[t] != CLIPS_PER_CLASS]
    per_fold = Counter(c.fold for c in clips)
    problems += [Problem(csv_path, "wrong count", f"fold {f} has {per_fold[f]} clips, expected {CLIPS_PER_FOLD}")
                 for f in range(1, N_FOLDS + 1) if per_fold[f] != CLIPS_PER_FOLD]
    return problems
