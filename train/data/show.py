"""Plot one clip: its waveform and the log-mel spectrogram the models see (the book's figures 6-2 and 6-5)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.audio import load_audio
from edge.frontend import FrontEnd, hz_to_mel

from .esc50 import DatasetError, read_clips
from edge.atomic import staged

MEL_AXIS_TICKS_HZ = (0, 250, 500, 1000, 2000, 4000, 8000, 16000)


def category_of(path: Path):
    """The ESC-50 category of a clip inside an ESC-50 layout (``.../audio/x.wav``), else None."""
    try:
        clips = read_clips(path.resolve().parent.parent)
    except DatasetError:
        return None
    return next((c.category for c in clips if c.path.name == path.name), None)


def plot_clip(clip, out, frontend: FrontEnd = FrontEnd()) -> Path:
    """Write a PNG with the waveform (seconds) over the log-mel spectrogram (seconds x Hz on a mel axis, dB)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clip, out = Path(clip), Path(out)
    wave, rate = load_audio(clip)
    db = frontend.log_mel(wave, rate)
    category = category_of(clip)

    fig, ((top, spare), (bottom, colorbar)) = plt.subplots(
        2, 2, figsize=(10, 7), gridspec_kw={"height_ratios": [1, 2], "width_ratios": [40, 1]})
    spare.axis("off")  # keeps the two time axes aligned above the colour bar
    top.plot(np.arange(len(wave)) / rate, wave, linewidth=0.5)
    top.set(xlabel="time (s)", ylabel="amplitude", xlim=(0, len(wave) / rate),
            title=f"{clip.name}" + (f" ({category})" if category else "") + f", {rate} Hz")

    frame_s = frontend.hop_length / frontend.sample_rate
    low, high = hz_to_mel(frontend.fmin), hz_to_mel(frontend.fmax)
    band = (high - low) / (frontend.n_mels + 1)  # band centres are n_mels interior points of a mel linspace
    image = bottom.imshow(db, origin="lower", aspect="auto", cmap="magma", interpolation="nearest",
                          extent=(-frame_s / 2, (db.shape[1] - 0.5) * frame_s, low + band / 2, high - band / 2))
    ticks = [hz for hz in MEL_AXIS_TICKS_HZ if frontend.fmin <= hz <= frontend.fmax]
    bottom.set_yticks([float(hz_to_mel(hz)) for hz in ticks], [f"{hz:g}" for hz in ticks])
    bottom.set(xlabel="time (s)", ylabel="frequency (Hz, mel scale)",
               title=f"log-mel spectrogram ({frontend.n_mels} mel bands, {frontend.sample_rate} Hz, "
                     f"n_fft {frontend.n_fft}, hop {frontend.hop_length})")
    fig.colorbar(image, cax=colorbar, label="dB (re max)", format="%+.0f")
    fig.tight_layout()
    with staged(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return out
