"""Training clips as a device might deliver them: driven into clipping at full scale, coded at a low bit rate (Ogg
Vorbis or Opus, through libsndfile), or both; made on the waveform once, before training, and kept as log-mels that
a run draws from, as train.rooms does for rooms.

Why the waveform: clipping spreads a sound's energy into harmonics and a lossy codec drops what its masking model
deems inaudible and band-limits the rest; neither is a per-band gain or an added power, so the mel-power conditions
of train.augment.RecordingConditions cannot make them. They are what the shipped MelCNN still loses to in
benchmarks.robustness (a recording clipped at +6 dB, MP3 at 32 kbit/s). The benchmark codes MP3 with LAME; training
never uses MP3, so the benchmark keeps measuring a codec the model has not heard.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from edge.audio import load_audio
from edge.frontend import FrontEnd, fit_length, resample

DEVICES_SEED = 47  # mixed with the run's seed, as train.rooms mixes its own; the same as train.babble's, so clip i's
# draws here start from babble clip i's stream: harmless (unrelated uses), kept so that past runs reproduce
CODECS = ("VORBIS", "OPUS")  # libsndfile's Ogg subtypes


@dataclass(frozen=True)
class DeviceDistribution:
    """How the devices are drawn. Compression levels are libsndfile's (0 = best quality, 1 = smallest file)."""

    drive_db: tuple = (1.0, 15.0)  # the clip's peak driven this far above full scale, then clipped
    vorbis_level: tuple = (0.7, 1.0)  # about 36-45 kbit/s for a mono 22.05-kHz clip
    opus_level: tuple = (0.9, 0.99)  # about 9-33 kbit/s
    opus_rate: int = 24000  # Opus codes 8, 12, 16, 24 or 48 kHz only


def clipped(x: np.ndarray, drive_db: float) -> np.ndarray:
    """The waveform with its peak ``drive_db`` above full scale, clipped there as a converter does."""
    peak = float(np.max(np.abs(x)))
    if peak == 0:
        return x
    return np.clip(x * (10 ** (drive_db / 20) / peak), -1.0, 1.0).astype(np.float32)


def coded(x: np.ndarray, rate: int, codec: str, level: float, opus_rate: int = DeviceDistribution.opus_rate):
    """Encode ``x`` (mono, at ``rate``) in Ogg ``codec`` at compression ``level`` and decode it again, in memory."""
    import soundfile as sf

    if codec not in CODECS:
        raise ValueError(f"codec must be one of {', '.join(CODECS)}, not {codec!r}")
    coded_rate = opus_rate if codec == "OPUS" else rate
    buffer = io.BytesIO()
    sf.write(buffer, resample(x, rate, coded_rate), coded_rate, format="OGG", subtype=codec, compression_level=level)
    buffer.seek(0)
    decoded, _ = sf.read(buffer, dtype="float32")
    return fit_length(resample(decoded, coded_rate, rate), len(x))


def delivered(x: np.ndarray, rate: int, rng: np.random.Generator,
              devices: DeviceDistribution = DeviceDistribution()) -> np.ndarray:
    """One device's recording of ``x``: clipped, coded or clipped then coded, a third of the time each."""
    kind = int(rng.integers(3))
    if kind != 1:
        x = clipped(x, rng.uniform(*devices.drive_db))
    if kind != 0:
        codec = CODECS[int(rng.integers(len(CODECS)))]
        level = rng.uniform(*(devices.opus_level if codec == "OPUS" else devices.vorbis_level))
        x = coded(x, rate, codec, level, devices.opus_rate)
    return x


def device_log_mels(paths: list, frontend: FrontEnd, copies: int, seed: int,
                    devices: DeviceDistribution = DeviceDistribution(), progress: bool = True) -> np.ndarray:
    """(len(paths), copies, n_mels, n_frames) float32 dB log-mels (as train.data.cache stores them): each clip as
    ``copies`` devices drawn from the run's seed delivered it. About 2-4 minutes for 1600 clips and 2 copies."""
    from tqdm import tqdm

    if copies < 1:
        raise ValueError(f"copies must be positive, not {copies}")
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence([seed, DEVICES_SEED]).spawn(len(paths))]
    out = np.empty((len(paths), copies, frontend.n_mels, frontend.n_frames), np.float32)
    for i, path in enumerate(tqdm(paths, desc=f"clips from {copies} devices each", disable=not progress)):
        x = frontend.clip(*load_audio(path))
        out[i] = np.stack([frontend.log_mel(delivered(x, frontend.sample_rate, rngs[i], devices), frontend.sample_rate)
                           for _ in range(copies)])
    return out
