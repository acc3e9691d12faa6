"""The one log-mel front end, shared by training and the edge (numpy, scipy.fft and soxr; no torch/librosa).

waveform, rate -> resample -> fixed 5-s window -> mel power spectrogram (Slaney mel, as
``librosa.feature.melspectrogram``) -> dB (``librosa.power_to_db(ref=np.max, top_db=80)``)
-> a fixed-size image for the CNN (3 channels, ImageNet mean/std). Instead of the dB scale, the image can
hold per-channel energy normalisation (``compression="pcen"``, Wang et al. 2017, as ``librosa.pcen``), or
both as two channels (``"db+pcen"``), or those two and a dB image without its late reverberation
(``"db+pcen+dereverb"``, see :func:`dereverberate`).

Every parameter lives in :class:`FrontEnd`, which serialises to JSON (it is stored in the ONNX
metadata; the feature cache is named from the log-mel parameters alone), so training and inference cannot drift
apart.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.fft import rfft

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
COMPRESSIONS = ("db", "pcen", "db+pcen", "db+pcen+dereverb")
PCEN_FIELDS = ("pcen_time_constant", "pcen_gain", "pcen_bias", "pcen_power")
DEREVERB_FIELDS = ("dereverb_rt60", "dereverb_delay", "dereverb_floor_db")
# What log_mel() depends on; the other fields make an image from its output.
LOG_MEL_FIELDS = ("sample_rate", "clip_seconds", "n_fft", "hop_length", "n_mels", "fmin", "fmax", "top_db")
# PCEN's bias and eps assume energies of 32-bit integer audio (librosa.pcen's documentation): the window's
# mel power, relative to its maximum, is scaled to that range first.
PCEN_SCALE = 2.0 ** 31
PCEN_EPS = 1e-6


def compression_layers(compression: str) -> tuple:
    """"db+pcen" -> ("db", "pcen"): one image channel per layer, in this order."""
    return tuple(compression.split("+"))


@dataclass(frozen=True)
class FrontEnd:
    """Parameters of the log-mel front end; the defaults give 128 x 216 images of 5-s clips."""

    sample_rate: int = 22050
    clip_seconds: float = 5.0
    n_fft: int = 1024
    hop_length: int = 512
    n_mels: int = 128
    fmin: float = 0.0
    fmax: float = 11025.0
    top_db: float = 80.0
    channels: int = 3
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    compression: str = "db"  # "db": dB below the window's peak, scaled to [0, 1]; "pcen": see pcen(); "db+pcen": both
    pcen_time_constant: float = 0.4  # seconds; the pcen_* defaults are librosa.pcen's
    pcen_gain: float = 0.98
    pcen_bias: float = 2.0
    pcen_power: float = 0.5
    dereverb_rt60: float = 0.5  # seconds: the decay that dereverberate() assumes
    dereverb_delay: float = 0.05  # seconds after the direct sound where late reverberation starts
    dereverb_floor_db: float = -20.0  # the most it removes from a frame, relative to the frame

    def __post_init__(self):
        if self.sample_rate <= 0 or self.clip_seconds <= 0:
            raise ValueError(f"sample_rate and clip_seconds must be positive: {self}")
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise ValueError(f"need 0 <= fmin < fmax <= sample_rate/2, got fmin={self.fmin} fmax={self.fmax}")
        if self.hop_length <= 0 or self.n_fft <= 0 or self.n_mels <= 0:
            raise ValueError(f"n_fft, hop_length and n_mels must be positive: {self}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"mean and std need {self.channels} values each")
        if self.compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {COMPRESSIONS}, not {self.compression!r}")
        if len(self.layers) > 1 and self.channels != len(self.layers):
            raise ValueError(f"compression {self.compression} gives {len(self.layers)} channels "
                             f"({', '.join(self.layers)}), not {self.channels}")
        if not (self.pcen_time_constant > 0 and 0 < self.pcen_gain <= 1 and self.pcen_bias > 0
                and 0 < self.pcen_power <= 1):
            raise ValueError("PCEN needs time_constant > 0, 0 < gain <= 1, bias > 0 and 0 < power <= 1: "
                             f"{self}")
        if not (self.dereverb_rt60 > 0 and self.dereverb_delay > 0 and self.dereverb_floor_db < 0):
            raise ValueError(f"dereverberation needs rt60 > 0, delay > 0 and floor_db < 0: {self}")
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    @property
    def clip_samples(self) -> int:
        return int(round(self.sample_rate * self.clip_seconds))

    @property
    def n_frames(self) -> int:
        return 1 + self.clip_samples // self.hop_length

    @property
    def layers(self) -> tuple:
        """The image's layers in channel order, e.g. ("db", "pcen"); one layer is repeated over every channel."""
        return compression_layers(self.compression)

    @property
    def image_shape(self) -> tuple:
        """(channels, n_mels, n_frames): the CNN input for one window."""
        return (self.channels, self.n_mels, self.n_frames)

    def to_json(self) -> str:
        """Every parameter as JSON, less those of layers it does not make (a dB front end leaves out the
        compression), so that it serialises (and reads the metadata of models exported before those layers
        existed) exactly as before them."""
        fields = dataclasses.asdict(self)
        unused = () if "dereverb" in self.layers else DEREVERB_FIELDS
        if self.compression == "db":
            unused += ("compression", *PCEN_FIELDS)
        for name in unused:
            del fields[name]
        return json.dumps(fields, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "FrontEnd":
        fields = json.loads(text)
        unknown = set(fields) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown front-end parameters: {sorted(unknown)}")
        return cls(**fields)

    def digest(self) -> str:
        """Short hash of every parameter (to_json): tells front ends (and the images they make) apart; the tests pin
        it, so that what exported models carry in their metadata stays readable."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:12]

    def log_mel_json(self) -> str:
        """The parameters log_mel() depends on, as JSON: front ends that differ only in how they make an image
        from the log-mel (channels, normalisation, PCEN) give the same, and share one feature cache."""
        return json.dumps({name: getattr(self, name) for name in LOG_MEL_FIELDS}, sort_keys=True)

    def log_mel_digest(self) -> str:
        """Short hash of log_mel_json(): names the feature cache, so stale log-mels are never reused."""
        return hashlib.sha256(self.log_mel_json().encode()).hexdigest()[:12]

    def clip(self, waveform: np.ndarray, rate: int) -> np.ndarray:
        """One clip at any rate -> ``clip_samples`` float32 samples at ``sample_rate`` (cropped or zero-padded)."""
        return fit_length(resample(waveform, rate, self.sample_rate), self.clip_samples)

    def log_mel(self, waveform: np.ndarray, rate: int) -> np.ndarray:
        """(n_mels, n_frames) float32 log-mel in dB, in [-top_db, 0], for one clip at any rate."""
        return power_to_db(self.mel_power(self.clip(waveform, rate)), self.top_db)

    def mel_power(self, x: np.ndarray) -> np.ndarray:
        """(n_mels, frames) mel power spectrogram of a waveform already at ``sample_rate`` (any length).

        Each filter is one small matrix-vector product over the bins where it is non-zero (1.5 % of
        the filterbank for the defaults): as fast as one dense product, and single-threaded, where a
        threaded dense product stalls whenever another process holds a core (measured: 2x the median).
        """
        power = power_spectrogram(x, self.n_fft, self.hop_length)
        out = np.zeros((self.n_mels, power.shape[0]), np.float32)
        for m, (lo, hi, weights) in enumerate(mel_bands(self.sample_rate, self.n_fft, self.n_mels,
                                                         self.fmin, self.fmax)):
            out[m] = power[:, lo:hi] @ weights
        return out

    def image(self, log_mel_db: np.ndarray) -> np.ndarray:
        """(channels, n_mels, n_frames) float32: dB scaled to [0, 1], or PCEN of the power, repeated, or both
        (dB first), or both and the dB image dereverberated; each channel normalised by its mean and std."""
        log_mel_db = np.asarray(log_mel_db, np.float32)
        hop_seconds = self.hop_length / self.sample_rate
        power = None if self.layers == ("db",) else 10 ** (log_mel_db / 10)  # relative to the window's peak
        layers = []
        for layer in self.layers:
            if layer == "db":
                layers.append((log_mel_db + self.top_db) / self.top_db)
            elif layer == "dereverb":
                clean = dereverberate(power, hop_seconds, self.dereverb_rt60, self.dereverb_delay,
                                      self.dereverb_floor_db)
                layers.append((power_to_db(clean, self.top_db) + self.top_db) / self.top_db)
            else:
                layers.append(pcen(PCEN_SCALE * power, hop_seconds, self.pcen_time_constant, self.pcen_gain,
                                   self.pcen_bias, self.pcen_power))
        mean = np.asarray(self.mean, np.float32)[:, None, None]
        std = np.asarray(self.std, np.float32)[:, None, None]
        return ((np.stack(layers) - mean) / std).astype(np.float32, copy=False)

    def __call__(self, waveform: np.ndarray, rate: int) -> np.ndarray:
        """Waveform at any rate -> the normalised CNN image for its (first) 5-s window."""
        return self.image(self.log_mel(waveform, rate))


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Band-limited resampling of a mono waveform with soxr (HQ); returns float32."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"expected a mono waveform (1-D array), got shape {x.shape}; average the channels first")
    if rate_in == rate_out:
        return x
    import soxr

    return soxr.resample(x, rate_in, rate_out, quality="HQ").astype(np.float32, copy=False)


def fit_length(x: np.ndarray, n: int) -> np.ndarray:
    """Crop or zero-pad the last axis to exactly n samples."""
    if x.shape[-1] >= n:
        return x[..., :n]
    pad = [(0, 0)] * (x.ndim - 1) + [(0, n - x.shape[-1])]
    return np.pad(x, pad)


@lru_cache(maxsize=8)
def hann_window(n_fft: int) -> np.ndarray:
    """Periodic Hann window (scipy.signal.get_window('hann', n, fftbins=True), as librosa)."""
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)


def power_spectrogram(x: np.ndarray, n_fft: int, hop_length: int, center: bool = True) -> np.ndarray:
    """|STFT|^2 over the last axis as (..., frames, 1 + n_fft/2); Hann window; frames centred with zero
    padding (librosa >= 0.10), or with ``center=False`` starting at sample 0.

    scipy's FFT, not numpy's: with numpy's, the listener's front end took 1.67 times as long (3.4 against 2.0 ms a
    window) and the default three seeds' whole window 10.2 against 8.6 ms, of a 10-ms budget
    (benchmarks/results/stft.json)."""
    x = np.asarray(x, np.float32)
    if center:
        x = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(n_fft // 2, n_fft // 2)])
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft, axis=-1)[..., ::hop_length, :]
    spectrum = rfft(frames * hann_window(n_fft), axis=-1)
    return (spectrum.real ** 2 + spectrum.imag ** 2).astype(np.float32, copy=False)


def a_weighting_db(freqs) -> np.ndarray:
    """A-weighting in dB (IEC 61672) at ``freqs`` Hz: 0 dB at 1 kHz, about -19 dB at 100 Hz."""
    f2 = np.maximum(np.asarray(freqs, np.float64), 1e-6) ** 2
    response = 12194.0 ** 2 * f2 ** 2 / ((f2 + 20.6 ** 2) * np.sqrt((f2 + 107.7 ** 2) * (f2 + 737.9 ** 2))
                                         * (f2 + 12194.0 ** 2))
    return 20 * np.log10(response) + 2.0


def sound_level_db(waves: np.ndarray, sample_rate: int, min_db: float = -80.0) -> np.ndarray:
    """Loudest A-weighted frame power of each waveform in a (batch, ..., samples) array, in dB: (batch,).

    Frames of about 0.128 s (a power of two), hopping by half a frame, Hann window, as in Tokozume et
    al. 2018; between-class learning (train.augment.BetweenClass) mixes sounds by these levels.
    """
    n_fft = 2 ** round(np.log2(0.128 * sample_rate))
    flat = np.asarray(waves, np.float32).reshape(len(waves), -1)
    flat = fit_length(flat, max(n_fft, flat.shape[-1]))
    power = power_spectrogram(flat, n_fft, n_fft // 2, center=False)
    weighted = power @ (10 ** (a_weighting_db(np.fft.rfftfreq(n_fft, 1 / sample_rate)) / 10)).astype(np.float32)
    return 10 * np.log10(np.maximum(weighted, 10 ** (min_db / 10))).max(-1)


def hz_to_mel(f):
    """Slaney mel scale: linear below 1 kHz, logarithmic above (librosa, htk=False)."""
    f = np.asarray(f, dtype=np.float64)
    min_log_hz, min_log_mel, logstep = 1000.0, 15.0, np.log(6.4) / 27.0
    linear = f / (200.0 / 3)
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, min_log_hz) / min_log_hz) / logstep, linear)


def mel_to_hz(m):
    m = np.asarray(m, dtype=np.float64)
    min_log_hz, min_log_mel, logstep = 1000.0, 15.0, np.log(6.4) / 27.0
    linear = m * (200.0 / 3)
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), linear)


def mel_band_edges_hz(n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """The n_mels + 2 frequencies, equally spaced in mels, that bound the triangular filters: filter m rises
    from edge m, peaks at edge m + 1 (its centre) and falls to edge m + 2."""
    return mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))


@lru_cache(maxsize=8)
def mel_filterbank(rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """(n_mels, 1 + n_fft/2) triangular filters, Slaney-normalised (librosa.filters.mel defaults)."""
    fft_freqs = np.linspace(0, rate / 2, 1 + n_fft // 2)
    mel_freqs = mel_band_edges_hz(n_mels, fmin, fmax)
    widths = np.diff(mel_freqs)
    ramps = mel_freqs[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_freqs[2:] - mel_freqs[:-2]))[:, None]
    weights = weights.astype(np.float32)
    weights.setflags(write=False)
    return weights


@lru_cache(maxsize=8)
def mel_bands(rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> tuple:
    """Every filter of :func:`mel_filterbank` as (first bin, end bin, weights there); empty filters give (0, 0, [])."""
    bands = []
    for row in mel_filterbank(rate, n_fft, n_mels, fmin, fmax):
        nonzero = np.flatnonzero(row)
        lo, hi = (int(nonzero[0]), int(nonzero[-1]) + 1) if nonzero.size else (0, 0)
        weights = np.ascontiguousarray(row[lo:hi])
        weights.setflags(write=False)
        bands.append((lo, hi, weights))
    return tuple(bands)


def power_to_db(power: np.ndarray, top_db: float = 80.0, amin: float = 1e-10) -> np.ndarray:
    """10 log10(S / max(S)), floored at -top_db (librosa.power_to_db with ref=np.max)."""
    power = np.maximum(np.asarray(power, np.float32), amin)
    db = 10.0 * np.log10(power) - 10.0 * np.log10(power.max())
    return np.maximum(db, -top_db).astype(np.float32)


def pcen(energy: np.ndarray, hop_seconds: float, time_constant: float = 0.4, gain: float = 0.98,
         bias: float = 2.0, power: float = 0.5) -> np.ndarray:
    """Per-channel energy normalisation of a (bands, frames) energy: each band divided by a running average of
    itself (first-order IIR over ``time_constant`` seconds, started at the first frame's energy), then
    root-compressed: ``(E / (eps + M)**gain + bias)**power - bias**power``.

    A steady background, digital silence or 10 dB of noise, becomes about the same small constant and onsets
    stand out, where the dB scale keeps the noise as a raised floor (Wang et al. 2017; Lostanlen et al. 2019).
    Equals ``librosa.pcen(energy, zi=scipy.signal.lfilter_zi(...) * energy[:, :1])``.
    """
    energy = np.asarray(energy, np.float64)
    frames = time_constant / hop_seconds
    smooth = running_average(energy, (np.sqrt(1 + 4 * frames ** 2) - 1) / (2 * frames ** 2))
    agc = np.exp(-gain * (np.log(PCEN_EPS) + np.log1p(smooth / PCEN_EPS)))
    return (bias ** power * np.expm1(power * np.log1p(energy * agc / bias))).astype(np.float32)


def dereverberate(power: np.ndarray, hop_seconds: float, rt60: float = 0.5, delay: float = 0.05,
                  floor_db: float = -20.0) -> np.ndarray:
    """A (bands, frames) power spectrogram less its estimated late reverberation: spectral subtraction of
    ``power[t - d] * exp(-2 delta d)``, the energy ``d`` frames (``delay`` seconds) earlier decayed as a room of
    reverberation time ``rt60`` decays it (``delta = 3 ln 10 / rt60``; Lebart et al. 2001), floored at ``floor_db``
    below the frame itself.

    A reverberant tail that decays as fast as the assumed room vanishes to the floor; the direct sound, onsets
    and steady sounds lose little (a steady sound ``-10 log10(1 - exp(-2 delta d))`` dB: 1.4 dB at the defaults
    and a 23-ms hop). Reverberation smears the short events that many ESC-50 classes are trains of; this layer
    shows the CNN them sharper (on fold 4 it moved the rooms' accuracy by 0.4 points only: docs/experiments.md).
    """
    power = np.asarray(power, np.float32)
    frames = max(1, int(round(delay / hop_seconds)))
    decay = np.float32(10 ** (-6 * frames * hop_seconds / rt60))  # exp(-2 delta d): energy falls 60 dB in rt60
    late = np.zeros_like(power)
    late[..., frames:] = decay * power[..., :-frames]
    return np.maximum(power - late, 10 ** (floor_db / 10) * power)


def running_average(energy: np.ndarray, b: float) -> np.ndarray:
    """``M[t] = (1 - b) M[t-1] + b E[t]`` along the last axis, with ``M[-1] = E[0]`` (scipy.signal.lfilter with
    its steady-state start), without scipy and without a Python loop over frames: within a block,
    ``M[t] = r^(t+1) M[-1] + b r^t cumsum(E[k] r^-k)`` with ``r = 1 - b``, blocks short enough for ``r^-k`` to stay
    finite. A loop over frames cost 1.8 ms of a 6-ms listener window; one product with a (frames x frames)
    matrix was as fast as this alone, but numpy's threaded product stalled against onnxruntime's threads
    (window median 8.1 ms, p95 24 ms, at 2 threads)."""
    r = 1.0 - b
    block = max(1, min(energy.shape[-1], int(600 / -np.log(r)))) if r > 0 else 1
    out = np.empty_like(energy)
    state = energy[..., :1]
    for start in range(0, energy.shape[-1], block):
        x = energy[..., start:start + block]
        k = np.arange(x.shape[-1])
        out[..., start:start + block] = r ** (k + 1) * state + b * r ** k * np.cumsum(x * r ** -k, axis=-1)
        state = out[..., start + x.shape[-1] - 1:start + x.shape[-1]]
    return out


def audionet_input(waveform: np.ndarray, rate: int, sample_rate: int, clip_seconds: float = 5.0) -> np.ndarray:
    """The raw-waveform model's input for one window: (1, samples) float32 at ``sample_rate``."""
    n = int(round(sample_rate * clip_seconds))
    return fit_length(resample(waveform, rate, sample_rate), n)[None]


WAVEFORM_PEAK_DBFS = -6.0  # every raw-waveform window is scaled to this peak


def normalize_peak(x: np.ndarray, to_db: float = WAVEFORM_PEAK_DBFS) -> np.ndarray:
    """Automatic gain for a raw-waveform model: the window is scaled so that its peak is ``to_db`` dBFS
    (digital silence passes unchanged).

    AudioNet learns the levels of ESC-50 (median clip peak -1.8 dBFS, 5 % below -19), so a quiet microphone
    loses it: at -30 dB gain the shipped model fell from 75.0 to 28 % on fold 4 recordings. Raising only
    windows below -20 dBFS left 3.25 points between -30 and +6 dB; scaling every window leaves 0.25, and
    74.75 % as recorded (fold 4, benchmarks.robustness; docs/experiments.md). The log-mel front end needs
    no such step: its dB scale is relative to each window's own maximum.
    """
    peak = float(np.abs(x).max()) if x.size else 0.0
    if peak <= 0.0:
        return x
    return (x * (10 ** (to_db / 20) / peak)).astype(np.float32, copy=False)
