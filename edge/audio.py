"""Reading audio files: soundfile only (torchaudio.load needs FFmpeg since 2.9)."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np


class AudioFileError(ValueError):
    """An audio file that is missing, unreadable, empty, truncated or holds non-finite samples; the
    message names the file."""


def load_audio(path) -> tuple:
    """(mono float32 waveform, sample rate) of a WAV/FLAC/OGG file; channels are aligned, then averaged
    (:func:`downmix`)."""
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
    return downmix(data, int(rate)), int(rate)


MAX_CHANNEL_DELAY_S = 0.001  # the sound's travel time across a 34-cm microphone pair


def downmix(frames: np.ndarray, rate: int) -> np.ndarray:
    """Mono float32 from (samples, channels): each channel shifted by the delay (within 1 ms) that best
    aligns it with the first, then all averaged (delay-and-sum, steered at the loudest source).

    A plain average of a spaced microphone pair cancels every frequency at which the delay between the
    channels is half a period: 0.3 ms cuts notches at 1.7, 5 and 8.3 kHz, and cost the log-mel model 31
    points in benchmarks.robustness. Aligned first, the channels add in phase.
    """
    frames = np.asarray(frames, np.float32)
    if frames.ndim != 2:
        raise ValueError(f"expected (samples, channels), got shape {frames.shape}")
    if frames.shape[1] == 1:
        return frames[:, 0]
    reference, max_lag = frames[:, 0], int(MAX_CHANNEL_DELAY_S * rate)
    total = reference.astype(np.float64)
    for channel in frames.T[1:]:
        delay = channel_delay(reference, channel, max_lag)
        total += np.roll(channel, -delay)  # the samples that wrap around are at most 1 ms of the edges
    return (total / frames.shape[1]).astype(np.float32)


def channel_delay(reference: np.ndarray, other: np.ndarray, max_lag: int) -> int:
    """Samples by which ``other`` lags ``reference`` (negative: it leads), the cross-correlation peak
    within +-``max_lag``; 0 when either is silent."""
    n = len(reference)
    if max_lag < 1 or n < 2 or not reference.any() or not other.any():
        return 0
    size = 1 << (2 * n - 1).bit_length()
    correlation = np.fft.irfft(np.fft.rfft(other, size) * np.conj(np.fft.rfft(reference, size)), size)
    lags = np.arange(-min(max_lag, n - 1), min(max_lag, n - 1) + 1)
    return int(lags[np.argmax(correlation[lags])])


CLIPPED_RUN = 3  # samples in a row at a window's maximum or minimum: what clipping leaves, and peaks do not
CLIP_CONTEXT = 2  # unclipped samples either side of a clipped run that its redrawn peak passes through
MAX_PEAK_BOOST_DB = 12.0  # a redrawn peak rises at most this far above the level it was clipped at


def clipped_runs(x: np.ndarray) -> tuple:
    """(starts, stops, levels) of every run of CLIPPED_RUN or more samples equal to ``x``'s maximum or
    minimum: a converter driven past full scale, or a gain stage past its limit, holds the level flat."""
    starts, stops, levels = [], [], []
    for level in (x.max(), x.min()) if x.size else ():
        if level == 0:
            continue
        at_level = x == level
        if np.count_nonzero(at_level) < CLIPPED_RUN:  # most windows: nothing held, nothing more to do
            continue
        edges = np.flatnonzero(np.diff(np.concatenate([[False], at_level, [False]]).view(np.int8)))
        a, b = edges[::2], edges[1::2]
        keep = b - a >= CLIPPED_RUN
        starts.append(a[keep])
        stops.append(b[keep])
        levels.append(np.full(int(keep.sum()), level, np.float64))
    if not starts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    return np.concatenate(starts), np.concatenate(stops), np.concatenate(levels)


def declip(x: np.ndarray) -> np.ndarray:
    """``x`` with its clipped peaks redrawn; ``x`` itself when nothing is clipped.

    Each run of :func:`clipped_runs` becomes the cubic through the CLIP_CONTEXT unclipped samples either
    side of it, kept beyond the clip level (the true peak was there or higher) and at most
    MAX_PEAK_BOOST_DB above it. The flat tops of a recording 6 dB too loud spread harmonics over every
    band; redrawn, the log-mel model's accuracy on fold 4's recordings 6 dB too loud rose by 0.375 points over
    two models (+1.0 and -0.25; benchmarks.robustness, docs/experiments.md). A run too near the window's
    edge, or next to another, to have its four neighbours is left as it is.
    """
    starts, stops, levels = clipped_runs(x)
    if not starts.size:
        return x
    n, lengths = len(x), stops - starts
    clipped = np.cumsum(np.bincount(starts, minlength=n + 1) - np.bincount(stops, minlength=n + 1))[:n] > 0
    side = np.arange(CLIP_CONTEXT)
    around = np.concatenate([starts[:, None] - CLIP_CONTEXT + side, stops[:, None] + side], axis=1)
    usable = ((around >= 0) & (around < n)).all(axis=1)
    usable[usable] = ~clipped[around[usable]].any(axis=1)
    starts, stops, levels, lengths, around = (a[usable] for a in (starts, stops, levels, lengths, around))
    if not starts.size:
        return x
    centres = (starts + stops - 1) / 2  # the cubic in time around each run's middle, in units of its length
    scales = lengths.astype(np.float64)
    powers = np.arange(4)
    cubics = np.linalg.solve(((around - centres[:, None]) / scales[:, None])[..., None] ** powers,
                             x[around].astype(np.float64)[..., None])[..., 0]
    run = np.repeat(np.arange(len(starts)), lengths)
    positions = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths) + starts[run]
    peaks = (cubics[run] * (((positions - centres[run]) / scales[run])[:, None] ** powers)).sum(axis=1)
    floor = np.abs(levels[run])
    redrawn = x.astype(np.float32, copy=True)
    redrawn[positions] = np.sign(levels[run]) * np.clip(np.abs(peaks), floor, floor * 10 ** (MAX_PEAK_BOOST_DB / 20))
    return redrawn


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
