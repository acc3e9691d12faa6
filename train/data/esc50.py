"""ESC-50 metadata and splits (the layout users download: ``audio/*.wav`` + ``meta/esc50.csv``)."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

N_CLASSES = 50
N_FOLDS = 5
SAMPLE_RATE = 44100
CLIP_SAMPLES = 220500


class DatasetError(ValueError):
    """The dataset folder is missing or not laid out like ESC-50; the message names the path."""


@dataclass(frozen=True)
class Clip:
    path: Path
    fold: int
    target: int
    category: str


@dataclass(frozen=True)
class Split:
    """Folds for training, model selection (may be empty: fixed epoch count) and the one test fold."""

    name: str
    train_folds: tuple
    valid_folds: tuple
    test_fold: int

    def select(self, clips):
        """(train, valid, test) lists of clips."""
        return ([c for c in clips if c.fold in self.train_folds],
                [c for c in clips if c.fold in self.valid_folds],
                [c for c in clips if c.fold == self.test_fold])


BOOK_SPLIT = Split("book", train_folds=(1, 2, 3), valid_folds=(4,), test_fold=5)


def cross_validation_splits():
    """The 5 official folds: test on fold k, train on the other four, no validation fold."""
    return [Split(f"cv{k}", tuple(f for f in range(1, N_FOLDS + 1) if f != k), (), k)
            for k in range(1, N_FOLDS + 1)]


def validation_splits():
    """The book split with another fold choosing the epoch: valid K trains on the other three of folds 1-4,
    selects on fold K and tests fold 5, so a recipe choice can be checked on more than fold 4."""
    return [Split(f"valid{k}", tuple(f for f in range(1, N_FOLDS) if f != k), (k,), N_FOLDS)
            for k in range(1, N_FOLDS - 1)]


def parse_splits(name: str) -> list:
    """``book`` -> [BOOK_SPLIT]; ``cv`` -> the five CV splits; ``cv3`` -> the split testing fold 3;
    ``valid2`` -> the book split selecting on fold 2."""
    cv = cross_validation_splits()
    if name == "book":
        return [BOOK_SPLIT]
    if name == "cv":
        return cv
    for split in cv + validation_splits():
        if split.name == name:
            return [split]
    raise ValueError(f"--split must be book, cv, cv1..cv5 or valid1..valid3, not {name!r}")


def find_root(path) -> Path:
    """The folder that holds ``meta/esc50.csv``: DIR itself, DIR/ESC-50 (what ``python -m train.data download``
    unpacks) or DIR/ESC-50-master (the GitHub archive unpacked by hand)."""
    path = Path(path)
    for root in (path, path / "ESC-50", path / "ESC-50-master"):
        if (root / "meta" / "esc50.csv").is_file():
            return root
    raise DatasetError(f"{path}: no ESC-50 dataset here (expected meta/esc50.csv and audio/; "
                       "get it with `python -m train.data download`)")


def read_clips(path) -> list:
    """All clips listed in ``meta/esc50.csv``, in CSV order."""
    root = find_root(path)
    csv_path = root / "meta" / "esc50.csv"
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    needed = {"filename", "fold", "target", "category"}
    if not rows or not needed <= set(rows[0]):
        raise DatasetError(f"{csv_path}: expected columns {sorted(needed)}")
    try:
        return [Clip(root / "audio" / r["filename"], int(r["fold"]), int(r["target"]), r["category"])
                for r in rows]
    except ValueError as err:
        raise DatasetError(f"{csv_path}: bad fold or target ({err})") from None


CSV_COLUMNS = ("filename", "fold", "target", "category", "esc10", "src_file", "take")


def write_dataset(root, clips, sample_rate: int) -> Path:
    """Write an ESC-50 layout (``audio/*.wav`` + ``meta/esc50.csv``) from ``(fold, target, category, waveform)``
    tuples: synthetic stand-ins for tests and benchmarks, named as ESC-50 names its files."""
    import soundfile as sf

    root = Path(root)
    (root / "audio").mkdir(parents=True)
    (root / "meta").mkdir()
    rows = [",".join(CSV_COLUMNS)]
    for number, (fold, target, category, waveform) in enumerate(clips):
        name = f"{fold}-{100 + number}-A-{target}.wav"
        sf.write(root / "audio" / name, waveform, sample_rate, subtype="PCM_16")
        rows.append(f"{name},{fold},{target},{category},False,{100 + number},A")
    (root / "meta" / "esc50.csv").write_text("\n".join(rows) + "\n")
    return root


def class_names(clips) -> list:
    """Category names indexed by target (``dog`` is 0)."""
    names = {c.target: c.category for c in clips}
    return [names.get(t, f"class_{t}") for t in range(N_CLASSES)]
