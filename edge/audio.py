"""Reading audio files: soundfile only (torchaudio.load needs FFmpeg since 2.9)."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np


class AudioFileError(ValueError):
    """An audio file that is missing, unreadable, empty, truncated or holds non-finite samples; the
    message names the file."""


def load_audio(path) -> tuple:
    """(mono float32 waveform, sample rate) of a WAV/FLAC/OGG file; channels are averaged."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AudioFileError(f"{path}: no such audio file")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as err:  # soundfile raises LibsndfileError, RuntimeError or TypeError
        raise AudioFileError(f"{path}: not a readable audio file ({err})") from None
    if data.shape[0] == 0:
        raise AudioFileError(f"{path}: contains no samples")
    if not np.isfinite(data).all():
        raise AudioFileError(f"{path}: holds non-finite samples (NaN or infinity); it cannot be classified")
    declared = wav_declared_bytes(path)
    if declared is not None and declared[0] > declared[1]:
        raise AudioFileError(f"{path}: truncated: its header declares {declared[0]} bytes of audio, the file holds "
                             f"{declared[1]} ({declared[1] / declared[0]:.0%}); re-copy or re-export it")
    return data.mean(axis=1), int(rate)


def wav_declared_bytes(path) -> tuple | None:
    """(bytes the ``data`` chunk declares, bytes present after its header) of a RIFF WAV file; None for
    other formats. libsndfile reads a truncated WAV without a word, so the header is checked here."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        size = Path(path).stat().st_size
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            name, length = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if name == b"data":  # 0 or 0xFFFFFFFF: written to a stream, length unknown
                return None if length in (0, 0xFFFFFFFF) else (length, size - f.tell())
            f.seek(length + (length & 1), 1)
