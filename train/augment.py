"""Training augmentations, torch RNG only, so the engine's per-epoch seeding makes them reproducible:
waveform transforms (tensors of shape (1, samples), switchable from the CLI with :func:`add_augment_args`),
batch mixing (between-class learning, mixup), a speed change of log-mel images, and recording conditions
simulated on cached log-mels."""
from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms import Compose

from edge.frontend import a_weighting_db, mel_band_edges_hz, mel_filterbank, sound_level_db


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(()))


class RandomGain:
    """Scale by a gain drawn uniformly in [-max_db, +max_db] dB."""

    def __init__(self, max_db: float = 6.0):
        self.max_db = max_db

    def __call__(self, wave: torch.Tensor) -> torch.Tensor:
        return wave * 10 ** (_uniform(-self.max_db, self.max_db) / 20)


class TimeShift:
    """Shift by up to ``max_fraction`` of the clip, either way: circularly (roll), or with ``wrap=False`` as a
    window of a longer recording would cut it, what is pushed past one end lost and digital silence (zeros)
    coming in at the other. The listener's windows start before a sound and end inside it, which a roll shows
    only where a clip's own trailing silence comes round (AudioNet: docs/experiments.md, Robustness)."""

    def __init__(self, max_fraction: float = 0.5, wrap: bool = True):
        self.max_fraction, self.wrap = max_fraction, wrap

    def __call__(self, wave: torch.Tensor) -> torch.Tensor:
        limit = int(self.max_fraction * wave.shape[-1])
        if not limit:
            return wave
        shift = int(torch.randint(-limit, limit + 1, ()))
        # negative padding crops: zeros come in at one end and as many samples go at the other
        return torch.roll(wave, shift, dims=-1) if self.wrap else F.pad(wave, (shift, -shift))

    def __repr__(self) -> str:
        return f"TimeShift({self.max_fraction:g}{'' if self.wrap else ', wrap=False'})"


class SpeedChange:
    """Play faster or slower by a factor in [1 - max_change, 1 + max_change] (linear interpolation,
    so pitch moves with tempo); the result is cropped or zero-padded back to the input length."""

    def __init__(self, max_change: float = 0.1):
        self.max_change = max_change

    def __call__(self, wave: torch.Tensor) -> torch.Tensor:
        n = wave.shape[-1]
        factor = _uniform(1 - self.max_change, 1 + self.max_change)
        stretched = F.interpolate(wave[None], size=max(1, round(n / factor)), mode="linear", align_corners=False)[0]
        return F.pad(stretched, (0, max(0, n - stretched.shape[-1])))[..., :n]


class PitchShift:
    """Shift pitch by a whole number of semitones in [-max_semitones, max_semitones], keeping tempo
    (torchaudio's phase vocoder: slow, so it is off by default; SpeedChange is the cheap alternative)."""

    def __init__(self, sample_rate: int, max_semitones: int = 2):
        self.sample_rate, self.max_semitones = sample_rate, max_semitones

    def __call__(self, wave: torch.Tensor) -> torch.Tensor:
        import torchaudio.functional as AF

        steps = int(torch.randint(-self.max_semitones, self.max_semitones + 1, ()))
        if steps == 0:
            return wave
        return AF.pitch_shift(wave, self.sample_rate, steps)[..., :wave.shape[-1]]


class AddNoise:
    """Add white noise at a signal-to-noise ratio drawn uniformly in [min_snr_db, max_snr_db]."""

    def __init__(self, min_snr_db: float = 10.0, max_snr_db: float = 40.0):
        self.min_snr_db, self.max_snr_db = min_snr_db, max_snr_db

    def __call__(self, wave: torch.Tensor) -> torch.Tensor:
        power = wave.pow(2).mean()
        if power <= 0:
            return wave
        noise_power = power / 10 ** (_uniform(self.min_snr_db, self.max_snr_db) / 10)
        return wave + torch.randn_like(wave) * noise_power.sqrt()


class RandomCrop:
    """Cut a random window of ``samples`` that contains the sound (after EnvNet, Tokozume & Harada 2017).

    The start is drawn uniformly among the windows whose peak reaches ``min_peak`` of the clip's peak,
    so that short events padded with silence, common in ESC-50, never give windows of silence alone.
    Shorter inputs are zero-padded at the end.
    """

    def __init__(self, samples: int, min_peak: float = 0.2):
        self.samples, self.min_peak = samples, min_peak

    def __call__(self, wave: torch.Tensor) -> torch.Tensor:
        n = wave.shape[-1]
        if n <= self.samples:
            return F.pad(wave, (0, self.samples - n))
        magnitude = wave.abs()
        loud = magnitude.amax(dim=0) >= self.min_peak * magnitude.max()
        loud_before = F.pad(loud.cumsum(0), (1, 0))
        starts = torch.nonzero(loud_before[self.samples:] > loud_before[:n - self.samples + 1]).flatten()
        if len(starts) == 0:  # digital silence: any window will do
            starts = torch.arange(n - self.samples + 1)
        start = int(starts[torch.randint(0, len(starts), ())])
        return wave[..., start:start + self.samples]

    def __repr__(self) -> str:
        return f"RandomCrop({self.samples}, min_peak={self.min_peak})"


class RandomApply:
    """Apply each transform independently with probability ``p``, in order."""

    def __init__(self, transforms: list, p: float = 0.5):
        self.transforms, self.p = list(transforms), p

    def __call__(self, wave: torch.Tensor) -> torch.Tensor:
        for transform in self.transforms:
            if float(torch.rand(())) < self.p:
                wave = transform(wave)
        return wave

    def __repr__(self) -> str:
        return f"RandomApply({[type(t).__name__ for t in self.transforms]}, p={self.p})"


def _perceived_weight(level_db: torch.Tensor, partner_level_db: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """Amplitude weight p of the own sound, (1 - p) of the partner's, so that the mix sounds like ratio : 1 - ratio
    for sounds at these levels (Tokozume et al. 2018): p = 1 / (1 + 10^((G1 - G2) / 20) * (1 - r) / r)."""
    return 1 / (1 + 10 ** ((level_db - partner_level_db) / 20) * (1 - ratio) / ratio)


class BetweenClass:
    """Between-class learning for sounds (Tokozume, Ushiku & Harada 2018), a mixup for waveforms.

    Each clip is mixed with a shuffled partner at its own ratio r ~ U(0, 1), and the label is
    r * own + (1 - r) * partner's. The waveforms are mixed so that the *perceived* ratio is r: with
    A-weighted levels G1, G2 (dB), p = 1 / (1 + 10^((G1 - G2) / 20) * (1 - r) / r), and the mix
    (p x1 + (1 - p) x2) / sqrt(p^2 + (1 - p)^2) keeps the level of the inputs. Partners come from a
    permutation of the batch, so in batches of 32 about one clip in 20 is paired with itself or with
    its own class and keeps its label (the paper always draws two different classes).
    Called like :class:`Mixup`: returns (mixed batch, partner index, r).
    """

    def __init__(self, sample_rate: int):
        self.sample_rate = sample_rate

    def __call__(self, x: torch.Tensor):
        n = x.shape[0]
        ratio = torch.rand(n).to(x.device)
        partner = torch.randperm(n).to(x.device)
        level = torch.from_numpy(sound_level_db(x.detach().cpu().numpy(), self.sample_rate)).to(x.device)
        p = _perceived_weight(level, level[partner], ratio).view(n, *[1] * (x.dim() - 1))
        return (p * x + (1 - p) * x[partner]) / torch.sqrt(p ** 2 + (1 - p) ** 2), partner, ratio

    def __repr__(self) -> str:
        return f"BetweenClass(sample_rate={self.sample_rate})"


class BetweenClassMel:
    """Between-class learning on log-mel images: :class:`BetweenClass`, with the sounds added as mel power.

    mixup of dB images averages their logarithms, which no two sounds heard together produce; heard
    together, sounds add their power. Each image (the front end's dB relative to its maximum, scaled and
    normalised) is turned back into mel power, weighted by p^2 and (1 - p)^2 with p from the clips'
    A-weighted loudest-frame levels, so that the mix sounds like r : 1 - r, added to a shuffled partner's
    and turned into an image again, relative to the mix's maximum. r ~ U(0, 1) per clip; the label is
    r * own + (1 - r) * partner's. Called like :class:`Mixup`: returns (mixed batch, partner index, r).
    """

    def __init__(self, frontend):
        self.top_db = float(frontend.top_db)
        self.mean = torch.tensor(frontend.mean, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(frontend.std, dtype=torch.float32)[:, None, None]
        centres = mel_band_edges_hz(frontend.n_mels, frontend.fmin, frontend.fmax)[1:-1]
        self.a_weight = torch.tensor(10 ** (a_weighting_db(centres) / 10), dtype=torch.float32)[:, None]

    def power(self, images: torch.Tensor) -> torch.Tensor:
        """(batch, channels, mels, frames) images -> (batch, mels, frames) mel power relative to each maximum."""
        mean, std = self.mean.to(images.device), self.std.to(images.device)
        db = ((images[:, 0] * std[0] + mean[0]) - 1) * self.top_db
        return 10 ** (db.clamp(-self.top_db, 0) / 10)

    def images(self, power: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`power` for mel power at any scale: dB relative to each maximum, floored."""
        peak = power.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-30)
        db = (10 * torch.log10(power.clamp_min(1e-30) / peak)).clamp_min(-self.top_db)
        mean, std = self.mean.to(power.device), self.std.to(power.device)
        return ((db / self.top_db + 1)[:, None] - mean) / std

    def level_db(self, power: torch.Tensor) -> torch.Tensor:
        """A-weighted power of each clip's loudest frame, in dB (the frame-level rule of sound_level_db)."""
        return 10 * torch.log10((power * self.a_weight.to(power.device)).sum(dim=-2).amax(dim=-1).clamp_min(1e-30))

    def __call__(self, x: torch.Tensor):
        n = x.shape[0]
        ratio = torch.rand(n).to(x.device)
        partner = torch.randperm(n).to(x.device)
        power = self.power(x.float())
        level = self.level_db(power)
        p = _perceived_weight(level, level[partner], ratio)[:, None, None]
        mixed = self.images(p ** 2 * power + (1 - p) ** 2 * power[partner])
        return mixed.to(x.dtype), partner, ratio

    def __repr__(self) -> str:
        return "BetweenClassMel()"


def _resample_axis(x: torch.Tensor, positions: torch.Tensor, axis: int, fill: float) -> torch.Tensor:
    """``x`` read at fractional ``positions`` along ``axis`` (linear interpolation); NaN positions give ``fill``."""
    x = x.movedim(axis, -1)
    outside = torch.isnan(positions)
    positions = positions.nan_to_num(0.0).clamp(0, x.shape[-1] - 1)
    low = positions.floor().long()
    high = (low + 1).clamp_max(x.shape[-1] - 1)
    share = (positions - low).to(x.dtype)
    out = x[..., low] * (1 - share) + x[..., high] * share
    return out.masked_fill(outside, fill).movedim(-1, axis)


class MelSpeedChange:
    """Play the clip faster or slower, on its (channels, mels, frames) log-mel image: pitch and tempo move
    together, as in a resampled recording (EnvNet-v2's scale augmentation; AudioNet's :class:`SpeedChange`).

    At speed s, what the clip had at f Hz and t s is heard at s * f Hz and t / s s: band k takes the image at
    the frequency centre_k / s, frame j the image at frame j * s, both by linear interpolation. What comes
    from above the top band or after the clip's end is silence (the image's minimum), as zero-padding is for
    SpeedChange; the image keeps its size. s is log-uniform in [1 / max_speed, max_speed].
    """

    def __init__(self, frontend, max_speed: float = 1.25):
        if max_speed < 1:
            raise ValueError(f"max_speed must be at least 1, not {max_speed}")
        self.max_speed = float(max_speed)
        self.centres = mel_band_edges_hz(frontend.n_mels, frontend.fmin, frontend.fmax)[1:-1]

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return self.play(image, float(np.exp(_uniform(-np.log(self.max_speed), np.log(self.max_speed)))))

    def play(self, image: torch.Tensor, speed: float) -> torch.Tensor:
        """``image`` as heard at ``speed`` (> 1 faster and higher)."""
        source_hz = self.centres / speed
        bands = np.interp(source_hz, self.centres, np.arange(len(self.centres)))  # below the lowest band: band 0
        bands[source_hz > self.centres[-1]] = np.nan
        frames = np.arange(image.shape[-1]) * speed
        frames[frames > image.shape[-1] - 1] = np.nan
        silence = float(image.min())
        image = _resample_axis(image, torch.from_numpy(bands), -2, silence)
        return _resample_axis(image, torch.from_numpy(frames), -1, silence)

    def __repr__(self) -> str:
        return f"MelSpeedChange(max_speed={self.max_speed:g})"


class Mixup:
    """mixup (Zhang et al. 2018): x = lam * x + (1 - lam) * x[partner], lam ~ Beta(alpha, alpha) per batch.

    Called on a batch, returns (mixed batch, partner index, per-example share of the own label).
    """

    def __init__(self, alpha: float):
        if alpha <= 0:
            raise ValueError(f"mixup alpha must be positive, not {alpha}")
        self.alpha = alpha

    def __call__(self, x: torch.Tensor):
        lam = float(torch.distributions.Beta(self.alpha, self.alpha).sample())
        partner = torch.randperm(x.shape[0]).to(x.device)
        return lam * x + (1 - lam) * x[partner], partner, torch.full((x.shape[0],), lam, device=x.device)

    def __repr__(self) -> str:
        return f"Mixup(alpha={self.alpha})"


class TimeCutMix:
    """CutMix along time (Yun et al. 2019; SpecMix, Kim et al. 2021, cuts bands of time and frequency): each image's
    frames from a random start, a share ~ U(0, 1) of them, are replaced by the same frames of a shuffled partner's
    image, and the label is each image's share of the frames. Unlike mixup, which averages two dB images into
    a spectrum no two sounds heard together make, every frame stays one real sound's: a sound cut off and
    another following it, as the listener's windows cut sounds. A point under mixup on fold 4 for MelCNN
    (docs/experiments.md). Called like :class:`Mixup`.
    """

    def __call__(self, x: torch.Tensor):
        n, frames = x.shape[0], x.shape[-1]
        length = (torch.rand(n) * frames).round().long()
        start = (torch.rand(n) * (frames - length + 1)).floor().long()
        index = torch.arange(frames)
        pasted = ((index >= start[:, None]) & (index < (start + length)[:, None])).to(x.device)
        partner = torch.randperm(n).to(x.device)
        mixed = torch.where(pasted[:, None, None, :], x[partner], x)
        return mixed, partner, 1 - length.to(x.device, x.dtype) / frames

    def __repr__(self) -> str:
        return "TimeCutMix()"


class FreqMixStyle:
    """Freq-MixStyle (Kim et al. 2022; the CP-JKU DCASE systems): with probability ``p`` per batch, each image's
    per-band statistics over time are swapped for a mixture of its own and a random partner's, at a ratio drawn
    from Beta(``alpha``, ``alpha``) per image. The mean of a band over time is the recording's colouring (microphone,
    room, distance), its spread the band's dynamics: the network sees each sound as other recordings colour it,
    while the label stays its own. Each channel (dB, PCEN) keeps its own statistics.
    """

    def __init__(self, p: float, alpha: float = 0.3, eps: float = 1e-6):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Freq-MixStyle probability must be in [0, 1], not {p}")
        if alpha <= 0:
            raise ValueError(f"Freq-MixStyle alpha must be positive, not {alpha}")
        self.p, self.alpha, self.eps = p, alpha, eps

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if float(torch.rand(())) >= self.p:
            return x
        mean = x.mean(dim=-1, keepdim=True)  # (batch, channels, bands, 1)
        std = (x.var(dim=-1, keepdim=True) + self.eps).sqrt()
        share = torch.distributions.Beta(self.alpha, self.alpha).sample((x.shape[0], 1, 1, 1)).to(x)
        partner = torch.randperm(x.shape[0]).to(x.device)
        mixed_mean = share * mean + (1 - share) * mean[partner]
        mixed_std = share * std + (1 - share) * std[partner]
        return (x - mean) / std * mixed_std + mixed_mean

    def __repr__(self) -> str:
        return f"FreqMixStyle(p={self.p:g}, alpha={self.alpha:g})"


def build_mix(config, sample_rate: int | None = None, frontend=None):
    """The batch mixing ``config.mix`` names, or None. Between-class learning mixes waveforms at ``sample_rate``,
    or, given the log-mel ``frontend`` that made the images, mel power."""
    if config.mix == "between-class":
        return BetweenClass(sample_rate) if frontend is None else BetweenClassMel(frontend)
    if config.mix == "mixup":
        return Mixup(config.mixup_alpha)
    if config.mix == "time-cutmix":
        return TimeCutMix()
    return None


def add_augment_args(parser: argparse.ArgumentParser, defaults) -> argparse.ArgumentParser:
    """The waveform augmentation flags, with the defaults of ``defaults`` (train.audionet.AudioNetConfig)."""
    d = defaults
    group = parser.add_argument_group("waveform augmentation (training clips only)")
    group.add_argument("--no-gain", action="store_true", default=d.no_gain, help="disable random gain (+-6 dB)")
    group.add_argument("--no-shift", action="store_true", default=d.no_shift,
                       help="disable the random time shift (rolled or not, --shift-wrap)")
    group.add_argument("--shift-wrap", action=argparse.BooleanOptionalAction, default=d.shift_wrap,
                       help="the time shift rolls the clip round; --no-shift-wrap shifts it with silence coming in "
                            "and the far end lost, as the listener's windows cut a recording")
    group.add_argument("--no-speed", action="store_true", default=d.no_speed,
                       help="disable random speed change (+-10 %%)")
    group.add_argument("--noise", action=argparse.BooleanOptionalAction, default=d.noise,
                       help=f"additive white noise, SNR 10-40 dB (default: {'on' if d.noise else 'off'})")
    group.add_argument("--pitch", type=int, default=d.pitch, metavar="SEMITONES",
                       help="random pitch shift up to this many semitones (slow; 0 = off)")
    group.add_argument("--augment-p", type=float, default=d.augment_p, help="probability of applying each augmentation")
    group.add_argument("--crop-seconds", type=float, default=d.crop_seconds,
                       help="train on random windows of this length that contain the sound, and test on "
                            f"whole clips (0 = train on whole clips; default {d.crop_seconds:g})")
    return parser


def build_augment(config, sample_rate: int):
    """The training transform the waveform augmentation settings ask for, or None when every one is off.

    The random ones run on the whole clip, then ``crop_seconds`` cuts the training window.
    """
    transforms = []
    if not config.no_gain:
        transforms.append(RandomGain())
    if not config.no_shift:
        transforms.append(TimeShift(wrap=config.shift_wrap))
    if not config.no_speed:
        transforms.append(SpeedChange())
    if config.pitch:
        transforms.append(PitchShift(sample_rate, config.pitch))
    if config.noise:
        transforms.append(AddNoise())
    chain = [RandomApply(transforms, config.augment_p)] if transforms else []
    if config.crop_seconds:
        chain.append(RandomCrop(round(config.crop_seconds * sample_rate)))
    if len(chain) > 1:
        return Compose(chain)
    return chain[0] if chain else None


SNR_DB = (5.0, 30.0)  # of the simulated noise and backgrounds, over the whole clip


def db_to_power(log_mel_db) -> torch.Tensor:
    return 10 ** (torch.as_tensor(np.asarray(log_mel_db), dtype=torch.float64) / 10)


class RecordingConditions:
    """How a device might have recorded the clip, simulated on its log-mel (dB relative to the clip's maximum,
    as train.data.cache stores it): another sound in the background (one of ``backgrounds``, when given), speech
    babble in the background (one of ``babble``, from train.babble, when given), room reverberation (with
    ``rooms``, one of the clip's copies heard in image-source rooms, from train.rooms), a device's clipping or codec
    (with ``devices``, one of the clip's copies from train.devices, for clips not heard in a room), background noise
    (with ``noises``, one of those heard through the front end, from train.noises), and a microphone's band and
    colour, each with probability ``p``. Returns the dB log-mel of the result, relative
    to its own maximum again.

    It works on mel power, not waveforms, so it reuses the feature cache and costs about a millisecond per
    clip. Reverberation is an exponential power decay per band (RT60 shorter at high frequencies) added at
    a direct-to-reverberant ratio; noise has a random spectral slope, per-bin fluctuation and, half the
    time, a slowly varying level; the microphone is a high-pass and a low-pass of random order and corner
    and a smooth random tilt. These generators, and their seeds, are not the robustness benchmark's
    (pyroomacoustics rooms, audiomentations and espeak-ng noise, scipy filters), so the benchmark measures
    how well the model generalises to conditions it never saw in this form.
    """

    def __init__(self, frontend, p: float = 1 / 3, snr_db: tuple = SNR_DB, rt60_s: tuple = (0.2, 1.2),
                 drr_db: tuple = (-3.0, 12.0), highpass_hz: tuple = (50.0, 500.0),
                 lowpass_hz: tuple = (2500.0, 10000.0),
                 tilt_db_per_octave: float = 2.0, backgrounds=None, babble=None, rooms=None, noises=None,
                 devices=None):
        if not 0 <= p <= 1:
            raise ValueError(f"p must be a probability, not {p}")
        self.p, self.snr_db, self.rt60_s, self.drr_db = p, snr_db, rt60_s, drr_db
        self.highpass_hz, self.lowpass_hz, self.tilt = highpass_hz, lowpass_hz, tilt_db_per_octave
        f = frontend
        centres = np.maximum(mel_band_edges_hz(f.n_mels, f.fmin, f.fmax)[1:-1], 20.0)
        self.centres = torch.tensor(centres, dtype=torch.float64)[:, None]
        position = np.log(centres / centres[0]) / np.log(centres[-1] / centres[0])  # 0 lowest band .. 1 top
        self.rt60_scale = torch.tensor(1 - 0.4 * position, dtype=torch.float64)[:, None]
        bins = (mel_filterbank(f.sample_rate, f.n_fft, f.n_mels, f.fmin, f.fmax) > 0).sum(axis=1)
        self.bins = torch.tensor(np.maximum(bins, 1), dtype=torch.float64)[:, None]  # noise degrees of freedom
        self.frame_rate = f.sample_rate / f.hop_length
        self.top_db = f.top_db
        for name, bank in (("backgrounds", backgrounds), ("babble", babble), ("noises", noises)):
            if bank is not None and np.shape(bank)[1:2] != (f.n_mels,):
                raise ValueError(f"{name} must be (clips, {f.n_mels}, frames) log-mels, not {np.shape(bank)}")
        self.backgrounds, self.babble, self.noises = backgrounds, babble, noises
        for name, copies in (("rooms", rooms), ("devices", devices)):
            if copies is not None and np.shape(copies)[2:3] != (f.n_mels,):
                raise ValueError(f"{name} must be (clips, copies, {f.n_mels}, frames) log-mels, not {np.shape(copies)}")
        self.rooms, self.devices = rooms, devices

    def __call__(self, log_mel_db: np.ndarray, index: int | None = None) -> np.ndarray:
        """``index`` is the clip's row in ``rooms`` and ``devices`` (needed only with them)."""
        if self.rooms is not None and float(torch.rand(())) < self.p:  # heard in a room, before any noise
            log_mel_db = self.rooms[index, int(torch.randint(self.rooms.shape[1], ()))]
        elif self.devices is not None and float(torch.rand(())) < self.p:
            log_mel_db = self.devices[index, int(torch.randint(self.devices.shape[1], ()))]
        power = db_to_power(log_mel_db)
        for bank in (self.backgrounds, self.babble):
            if bank is not None and float(torch.rand(())) < self.p:
                power = power + self.background(power, bank)
        if self.rooms is None and float(torch.rand(())) < self.p:
            power = self.reverberate(power)
        if float(torch.rand(())) < self.p:
            power = power + (self.noise(power) if self.noises is None else self.background(power, self.noises))
        if float(torch.rand(())) < self.p:
            power = power * self.microphone()
        return self.to_db(power)

    def to_db(self, power: torch.Tensor) -> np.ndarray:
        """Mel power -> float32 dB relative to its maximum, floored at -top_db (the cache's layout)."""
        db = 10 * torch.log10(power.clamp_min(1e-20) / power.max())
        return db.clamp_min(-self.top_db).to(torch.float32).numpy()

    def background(self, power: torch.Tensor, bank) -> torch.Tensor:
        """A random one of the log-mels in ``bank``, rolled in time and repeated to the clip's length, at an SNR
        over the whole clip drawn from ``snr_db``: a sound that comes and goes, as speech or traffic do, where
        noise() is steady. The label stays the clip's (mixup is what mixes labels)."""
        other = db_to_power(bank[int(torch.randint(len(bank), ()))])
        frames = power.shape[-1]
        other = torch.roll(other, int(torch.randint(other.shape[-1], ())), dims=-1)
        other = other.repeat(1, -(-frames // other.shape[-1]))[:, :frames]
        return other * power.mean() / other.mean().clamp_min(1e-20) / 10 ** (_uniform(*self.snr_db) / 10)

    def reverberate(self, power: torch.Tensor) -> torch.Tensor:
        """Direct sound plus a tail that decays by 60 dB in RT60 (shorter by up to 40 % in the top band)."""
        frames = power.shape[-1]
        rt60 = _uniform(*self.rt60_s) * self.rt60_scale
        decay = 10 ** (-6 / (rt60 * self.frame_rate))  # power ratio per frame, per band
        kernel = decay ** torch.arange(frames, dtype=torch.float64)
        kernel[:, 0] = 0  # the direct sound is added separately
        kernel = kernel / kernel.sum(dim=-1, keepdim=True) * 10 ** (-_uniform(*self.drr_db) / 10)
        # causal convolution along time, one kernel per band: tail[m, t] = sum_k power[m, t - k] kernel[m, k]
        tail = F.conv1d(F.pad(power[None], (frames - 1, 0)), kernel.flip(-1)[:, None], groups=len(kernel))[0]
        return power + tail.clamp_min(0)

    def noise(self, power: torch.Tensor) -> torch.Tensor:
        """Noise with a slope of -6..+3 dB per octave, at an SNR over the whole clip drawn from ``snr_db``."""
        shape = 10 ** (_uniform(-6.0, 3.0) * torch.log2(self.centres / 1000) / 10)
        fluctuation = torch.distributions.Gamma(self.bins, self.bins).sample((power.shape[-1],))[..., 0].T
        noise = shape * fluctuation
        if float(torch.rand(())) < 0.5:  # a level that wanders by a few dB over a second or so
            t = torch.arange(power.shape[-1], dtype=torch.float64) / self.frame_rate
            period, phase = _uniform(0.3, 3.0), _uniform(0, 2 * np.pi)
            noise = noise * 10 ** (_uniform(0, 6) * torch.sin(2 * np.pi * t / period + phase) / 10)
        return noise * power.mean() / noise.mean() / 10 ** (_uniform(*self.snr_db) / 10)

    def microphone(self) -> torch.Tensor:
        """Power gain per band: Butterworth-like high- and low-pass (orders 1-4) and a tilt around 1 kHz."""
        f = self.centres
        low_corner = np.exp(_uniform(*np.log(self.highpass_hz)))
        high_corner = np.exp(_uniform(*np.log(self.lowpass_hz)))
        high_order, low_order = (int(torch.randint(1, 5, ())) for _ in range(2))
        gain = 1 / (1 + (low_corner / f) ** (2 * high_order)) / (1 + (f / high_corner) ** (2 * low_order))
        return gain * 10 ** (_uniform(-self.tilt, self.tilt) * torch.log2(f / 1000) / 10)

    def __repr__(self) -> str:
        backgrounds = "" if self.backgrounds is None else f", backgrounds={len(self.backgrounds)}"
        backgrounds += "" if self.babble is None else f", babble={len(self.babble)}"
        backgrounds += "" if self.noises is None else f", noises={len(self.noises)}"
        rooms = "" if self.rooms is None else f", rooms={np.shape(self.rooms)[1]} per clip"
        rooms += "" if self.devices is None else f", devices={np.shape(self.devices)[1]} per clip"
        return f"RecordingConditions(p={self.p:.3g}, drr_db={self.drr_db}{backgrounds}{rooms})"
