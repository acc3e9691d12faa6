"""Training clips heard in rooms: image-source impulse responses (pyroomacoustics) of random shoebox rooms,
convolved with each clip's waveform before the front end, kept as log-mels that a training run draws from.

Why the waveform: reverberation simulated on mel power (a smooth decay per band, in
train.augment.RecordingConditions) is learnt as that simulation, not as rooms. On fold 4, the MelCNN recipe's
seeds lose 4.75-10.75 points to that simulation but 10.5-19.5 to image-source rooms of the same RT60 and
direct-to-reverberant ratio (benchmarks.simulated_rooms, docs/experiments.md): early reflections colour the
spectrum, and a smooth decay has none. Convolving ``copies`` versions of each clip once, before training,
keeps an epoch as fast as the log-mel cache makes it.

The rooms come from the run's seed and never include the robustness benchmark's two rooms.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.audio import load_audio
from edge.frontend import FrontEnd

# benchmarks.robustness.ROOMS (a test keeps the two in step): rooms within 15 % of these are never drawn
HELD_OUT_ROOMS = ((5.0, 4.0, 2.8), (12.0, 9.0, 4.0))
ROOMS_SEED = 31  # mixed with the run's seed, so that the rooms differ between seeds and from the benchmark's


@dataclass(frozen=True)
class RoomDistribution:
    """Where the training rooms come from: shoebox sizes, reverberation times and placements."""

    length_m: tuple = (3.0, 14.0)
    width_ratio: tuple = (0.5, 1.0)  # width = ratio * length
    height_m: tuple = (2.4, 4.0)
    rt60_s: tuple = (0.2, 1.0)
    wall_distance_m: float = 0.5  # at least, for the source and the microphone
    source_distance_m: float = 0.5  # at least, between them
    max_order: int = 100  # image-source order above which a room is drawn again (cost grows with its cube)


def is_held_out(size) -> bool:
    """True for a room within 15 % of one of the benchmark's rooms in every dimension."""
    return any(bool(np.all(np.abs(np.asarray(size) / np.asarray(held) - 1) < 0.15)) for held in HELD_OUT_ROOMS)


def impulse_response(rng: np.random.Generator, sample_rate: int, rooms: RoomDistribution = RoomDistribution()):
    """The impulse response between a random source and microphone in a random shoebox room."""
    import pyroomacoustics as pra

    while True:
        length = rng.uniform(*rooms.length_m)
        size = np.array([length, length * rng.uniform(*rooms.width_ratio), rng.uniform(*rooms.height_m)])
        if is_held_out(size):
            continue
        try:
            absorption, order = pra.inverse_sabine(rng.uniform(*rooms.rt60_s), size)
        except ValueError:  # a reverberation time too short for so large a room
            continue
        if order > rooms.max_order:
            continue
        source, microphone = (rng.uniform(rooms.wall_distance_m, size - rooms.wall_distance_m) for _ in range(2))
        if np.linalg.norm(source - microphone) < rooms.source_distance_m:
            continue
        room = pra.ShoeBox(size, fs=sample_rate, materials=pra.Material(absorption), max_order=order)
        room.add_source(source)
        room.add_microphone(microphone)
        room.compute_rir()
        return np.asarray(room.rir[0][0], np.float32)


def _reverberant_log_mels(path, frontend: FrontEnd, responses: list) -> np.ndarray:
    """(len(responses), n_mels, n_frames): the clip at ``path`` convolved with each impulse response."""
    from scipy.signal import fftconvolve

    x = frontend.clip(*load_audio(path))
    return np.stack([frontend.log_mel(fftconvolve(x, h)[:len(x)].astype(np.float32), frontend.sample_rate)
                     for h in responses])


def reverberant_log_mels(paths: list, frontend: FrontEnd, copies: int, seed: int, bank: int = 48,
                         rooms: RoomDistribution = RoomDistribution(), progress: bool = True) -> np.ndarray:
    """(len(paths), copies, n_mels, n_frames) float32 dB log-mels (as train.data.cache stores them): each clip
    convolved with ``copies`` impulse responses drawn from ``bank`` random rooms of ``rooms``. One process: about
    a minute for the book split's 1200 training clips, 4 copies and 48 rooms, next to an hour of training."""
    from tqdm import tqdm

    if copies < 1 or bank < 1:
        raise ValueError(f"copies and bank must be positive, not {copies} and {bank}")
    seeds = np.random.SeedSequence([seed, ROOMS_SEED]).spawn(bank + 1)
    responses = [impulse_response(np.random.default_rng(s), frontend.sample_rate, rooms)
                 for s in tqdm(seeds[:-1], desc="rooms", disable=not progress)]
    chosen = np.random.default_rng(seeds[-1]).integers(bank, size=(len(paths), copies))
    out = np.empty((len(paths), copies, frontend.n_mels, frontend.n_frames), np.float32)
    for i, path in enumerate(tqdm(paths, desc=f"clips in {copies} rooms each", disable=not progress)):
        out[i] = _reverberant_log_mels(path, frontend, [responses[k] for k in chosen[i]])
    return out
