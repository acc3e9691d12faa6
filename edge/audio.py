"""Reading audio files: soundfile only (torchaudio.load needs FFmpeg since 2.9)."""
from __future__ import annotations

from pathlib import Path



class AudioFileError(ValueError):
    """An audio file that is missing, unreadable or empty; the message names the file."""


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
    return data.mean(axis=1), int(rate)
