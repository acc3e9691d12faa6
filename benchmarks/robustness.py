"""How the shipped models hold up when sounds are recorded the way real microphones record them.

    python -m benchmarks.robustness --data data/ESC-50       # -> benchmarks/results/robustness.{json,png}

Every fold-5 clip (the test fold) becomes a recording a device could deliver: 1-2 s of room tone (pink
noise at -65 dBFS) before and after the clip, the clip placed at random, room tone under it all. Each
condition then changes that recording alone: the microphone's gain (and clipping at full scale), a
telephone's or a cheap microphone's band, a room's reverberation, noise at a given SNR (white, pink,
and babble from speech synthesis: no ESC-50 sound), 48-kHz stereo capture, or MP3 at 32 kbit/s. The
recording is written to a file and classified by ``edge.listen``'s own code (classify_file: the same
reader, windows, silence gate and front end); its label is the class with the highest probability
averaged over the windows the listener classified. A recording whose every window the gate calls
silence counts as wrong, and as ``silenced``. Each clip's dataset file, classified the same way (one
window, nothing around it), is the reference that shows what the listener's windows cost on the clean
recording; it is not a condition and is not in the drops.

The transforms use maintained libraries (scipy.signal, pyroomacoustics, audiomentations, soxr,
ffmpeg); their seeds, rooms and noise are the benchmark's own, never a training augmentation's.
Needs the ``bench`` extra and the ffmpeg and espeak-ng programs (``apt-get install ffmpeg espeak-ng``).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from edge.atomic import staged, write_json
from edge.audio import load_audio
from edge.classifier import Classifier, averaged
from edge.frontend import resample
from edge.listen import Listener, classify_file, parse_args
from edge.provenance import cpu_name, git_commit
from benchmarks.measuring import REPO, model_files, model_names, shipped_models, shown_path

RESULTS = REPO / "benchmarks" / "results"
RATE = 44100
ROOM_TONE_DBFS = -65.0
SEED = 20261130  # the benchmark's own: room tone, placement, noise and rooms never match a training seed
BABBLE_VOICES = 6
BABBLE_TEXT = ("The meeting has been moved to the second floor, next to the kitchen. Could you bring the "
               "printed reports and the keys to the storage room? We will start at half past ten, and the "
               "presentation should not take more than twenty minutes.")


@dataclass(frozen=True)
class Condition:
    """One way of recording: ``kind`` names the transform, ``value`` its setting."""

    name: str
    kind: str
    value: object = None


CONDITIONS = [
    Condition("clean", "clean"),
    Condition("gain -30 dB", "gain", -30.0), Condition("gain -20 dB", "gain", -20.0),
    Condition("gain -10 dB", "gain", -10.0), Condition("gain +6 dB (clipped)", "gain", 6.0),
    Condition("telephone 300-3400 Hz", "band", (300.0, 3400.0)),
    Condition("cheap mic 100-7000 Hz", "band", (100.0, 7000.0)),
    Condition("room RT60 0.3 s", "reverb", 0.3), Condition("room RT60 0.8 s", "reverb", 0.8),
    Condition("white noise 20 dB SNR", "white", 20.0), Condition("white noise 10 dB SNR", "white", 10.0),
    Condition("pink noise 20 dB SNR", "pink", 20.0), Condition("pink noise 10 dB SNR", "pink", 10.0),
    Condition("babble 20 dB SNR", "babble", 20.0), Condition("babble 10 dB SNR", "babble", 10.0),
    Condition("48 kHz stereo", "stereo48k"),
    Condition("MP3 32 kbit/s", "mp3", 32),
]
# Not a recording condition: the dataset's own file, one 5-s window with nothing around it. Against "clean" it
# shows what the listener's windows cost (a sound cut off-centre), apart from any condition; not in the drops.
DATASET_CLIP = Condition("dataset clip", "dataset")
ROOMS = {0.3: [5.0, 4.0, 2.8], 0.8: [12.0, 9.0, 4.0]}  # RT60 (s) -> shoebox size (m)
RIRS_PER_ROOM = 8


# --------------------------------------------------------------------------- the transforms

def pink_noise(samples: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS pink (1/f) noise: audiomentations' coloured-noise generator (it draws from numpy's global
    generator, which is seeded from ``rng`` here)."""
    from audiomentations.augmentations.add_color_noise import generate_decaying_white_noise

    np.random.seed(int(rng.integers(2**31)))
    return generate_decaying_white_noise((samples,), beta=-3.01, sample_rate=RATE, apply_a_weighting=False,
                                         n_fft=128).astype(np.float32)


def recording(clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """1-2 s of room tone, the clip, 1-2 s of room tone; room tone under everything."""
    before, after = (int(rng.uniform(1.0, 2.0) * RATE) for _ in range(2))
    x = np.concatenate([np.zeros(before, np.float32), clip, np.zeros(after, np.float32)])
    return x + pink_noise(len(x), rng) * 10 ** (ROOM_TONE_DBFS / 20)


def gain(x: np.ndarray, db: float) -> np.ndarray:
    """The microphone's gain; the converter clips at full scale."""
    return np.clip(x * 10 ** (db / 20), -1.0, 1.0)


def band(x: np.ndarray, rate: int, low: float, high: float) -> np.ndarray:
    """A 4th-order Butterworth band-pass (scipy.signal): what a telephone or a cheap microphone passes."""
    from scipy.signal import butter, sosfilt

    return sosfilt(butter(4, [low, high], btype="bandpass", fs=rate, output="sos"), x).astype(np.float32)


def room_impulse_response(rt60: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Image-source impulse response (pyroomacoustics) of a shoebox room with reverberation time ``rt60``,
    source and microphone at random places at least 1 m from the walls and each other."""
    import pyroomacoustics as pra

    size = np.array(ROOMS[rt60])
    absorption, max_order = pra.inverse_sabine(rt60, size)
    room = pra.ShoeBox(size, fs=rate, materials=pra.Material(absorption), max_order=max_order)
    while True:
        source, mic = (rng.uniform(1.0, size - 1.0) for _ in range(2))
        if np.linalg.norm(source - mic) >= 1.0:
            break
    room.add_source(source)
    room.add_microphone(mic)
    room.compute_rir()
    return np.asarray(room.rir[0][0], np.float32)


def reverb(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve with a room's impulse response; the result keeps the input's RMS (level is another condition)."""
    from scipy.signal import fftconvolve

    wet = fftconvolve(x, rir)[:len(x)]
    return (wet * np.sqrt(np.mean(x ** 2) / max(np.mean(wet ** 2), 1e-20))).astype(np.float32)


def add_noise(x: np.ndarray, rate: int, kind: str, snr_db: float, rng: np.random.Generator,
              babble: list | None = None) -> np.ndarray:
    """White, pink or babble noise at ``snr_db`` relative to the recording's RMS (audiomentations)."""
    import random

    import audiomentations as A

    if kind == "babble":
        transform = A.AddBackgroundNoise(sounds_path=babble, min_snr_db=snr_db, max_snr_db=snr_db, p=1.0)
    else:
        decay = 0.0 if kind == "white" else -3.01
        transform = A.AddColorNoise(min_snr_db=snr_db, max_snr_db=snr_db, min_f_decay=decay, max_f_decay=decay,
                                    p=1.0)
    seed = int(rng.integers(2**31))
    random.seed(seed)
    np.random.seed(seed)
    return transform(samples=x.astype(np.float32), sample_rate=rate)


def stereo_48k(x: np.ndarray, rate: int) -> np.ndarray:
    """(frames, 2) at 48 kHz: a stereo microphone pair, the right channel 0.3 ms later and 1 dB quieter."""
    y = resample(x, rate, 48000)
    delay = int(round(0.0003 * 48000))
    right = np.concatenate([np.zeros(delay, np.float32), y[:-delay]]) * 10 ** (-1 / 20)
    return np.stack([y, right], axis=1)


def mp3(x: np.ndarray, rate: int, kbps: int, folder: Path) -> np.ndarray:
    """Encode to MP3 at ``kbps`` and decode again, with ffmpeg (libmp3lame)."""
    source, coded, decoded = folder / "in.wav", folder / "coded.mp3", folder / "decoded.wav"
    sf.write(str(source), x, rate, subtype="FLOAT")
    run = ["ffmpeg", "-loglevel", "error", "-y"]
    subprocess.run([*run, "-i", str(source), "-c:a", "libmp3lame", "-b:a", f"{kbps}k", str(coded)], check=True)
    subprocess.run([*run, "-i", str(coded), "-ar", str(rate), "-c:a", "pcm_f32le", str(decoded)], check=True)
    y, _ = sf.read(str(decoded), dtype="float32")
    return y


def babble_sources(folder: Path, voices: int = BABBLE_VOICES) -> list:
    """WAV files of several synthetic voices talking at once (espeak-ng): speech is no ESC-50 class."""
    files = []
    for v in range(voices):
        path = folder / f"babble-{v}.wav"
        subprocess.run(["espeak-ng", "-w", str(path), "-s", str(140 + 12 * v), "-p", str(20 + 12 * v),
                        "-v", ["en", "en-us", "en+f3", "en+m3", "en+f2", "en+m5"][v % 6], BABBLE_TEXT], check=True)
        files.append(path)
    mixed = folder / "babble.wav"
    waves = []
    for path in files:
        wave, rate = load_audio(path)
        waves.append(resample(wave, rate, RATE))
    length = max(len(w) for w in waves)
    mix = sum(np.roll(np.pad(w, (0, length - len(w))), int(length * v / voices)) for v, w in enumerate(waves))
    sf.write(str(mixed), (mix / np.abs(mix).max() * 0.5).astype(np.float32), RATE)
    return [mixed]


@dataclass
class Sources:
    """What the conditions draw from, made once per benchmark run from its own seed: babble recordings and
    RIRS_PER_ROOM impulse responses for each reverberation time (source and microphone placed anew)."""

    folder: Path
    babble: list
    rirs: dict

    @classmethod
    def make(cls, folder: Path, conditions: list) -> "Sources":
        """What ``conditions`` need, from the benchmark's own seed."""
        rng = np.random.default_rng([SEED, 10**6])
        kinds = {c.kind for c in conditions}
        rirs = {c.value: [room_impulse_response(c.value, RATE, rng) for _ in range(RIRS_PER_ROOM)]
                for c in conditions if c.kind == "reverb"}
        return cls(folder, babble_sources(folder) if "babble" in kinds else [], rirs)


def degrade(condition: Condition, x: np.ndarray, rng: np.random.Generator, sources: Sources) -> tuple:
    """(waveform, rate) of ``x`` (a 44.1-kHz recording) recorded under ``condition``."""
    kind, value = condition.kind, condition.value
    if kind == "clean":
        return x, RATE
    if kind == "gain":
        return gain(x, value), RATE
    if kind == "band":
        return band(x, RATE, *value), RATE
    if kind == "reverb":
        rirs = sources.rirs[value]
        return reverb(x, rirs[int(rng.integers(len(rirs)))]), RATE
    if kind in ("white", "pink", "babble"):
        return add_noise(x, RATE, kind, value, rng, sources.babble), RATE
    if kind == "stereo48k":
        return stereo_48k(x, RATE), 48000
    if kind == "mp3":
        return mp3(x, RATE, value, sources.folder), RATE
    raise ValueError(f"unknown condition kind {kind!r}")


# --------------------------------------------------------------------------- classification as edge.listen does it

class RecordingScorer(Listener):
    """edge.listen's Listener, keeping each classified window's probabilities instead of printing them."""

    def __init__(self, classifier: Classifier):
        super().__init__(classifier, classifier.sample_rate, parse_args(["--json"]))
        self.windows_seen: list = []

    def emit(self, result: dict):
        probabilities = self.history[-1] if result["status"] in ("ok", "uncertain") else None
        self.windows_seen.append(probabilities)

    def label(self, path: Path) -> int | None:
        """The recording's class: highest mean probability over the classified windows; None if all silent."""
        self.windows_seen = []
        classify_file(self, path)
        classified = [p for p in self.windows_seen if p is not None]
        return int(np.argmax(np.mean(classified, axis=0))) if classified else None


def scorer_for(files: tuple) -> RecordingScorer:
    members = [Classifier(f, threads=2) for f in files]
    return RecordingScorer(averaged(members))


def run(models: list, clips: list, conditions: list, folder: Path, progress: bool = True,
        per_clip: bool = False) -> dict:
    """{model: {condition: {"accuracy", "silenced", "recordings"}}} over ``clips`` (ESC-50 Clip objects);
    each of ``models`` is a tuple of ONNX files (model_files). ``per_clip`` adds "labels": each clip's predicted
    class index in ``clips``' order (None: silenced), to find which sounds a condition costs."""
    scorers = {name: scorer_for(files) for name, files in zip(model_names(models), models)}
    sources = Sources.make(folder, conditions)
    labels = {m: {c.name: [] for c in conditions} for m in scorers}
    for i, clip in enumerate(clips):
        wave, rate = load_audio(clip.path)
        wave = resample(wave, rate, RATE)
        rng = np.random.default_rng([SEED, i])
        base = recording(wave, rng)
        for condition in conditions:
            if condition == DATASET_CLIP:
                path = clip.path
            else:
                condition_rng = np.random.default_rng([SEED, i, CONDITIONS.index(condition)])
                x, rate = degrade(condition, base, condition_rng, sources)
                path = folder / "recording.wav"
                sf.write(str(path), x, rate, subtype="FLOAT")
            for name, scorer in scorers.items():
                labels[name][condition.name].append(scorer.label(path))
        if progress and (i + 1) % 20 == 0:
            print(f"{i + 1}/{len(clips)} clips", file=sys.stderr, flush=True)
    targets = [clip.target for clip in clips]

    def scored(predicted: list) -> dict:
        entry = {"accuracy": sum(p == t for p, t in zip(predicted, targets)) / len(clips),
                 "silenced": predicted.count(None), "recordings": len(clips)}
        return entry | ({"labels": predicted} if per_clip else {})

    return {m: {name: scored(predicted) for name, predicted in by_condition.items()}
            for m, by_condition in labels.items()}


def summarize(results: dict) -> dict:
    """Add each condition's drop against clean (points) and each model's mean and worst drop; with the dataset
    clip scored, also what the listener costs on the clean recording against it (points, not in the drops)."""
    summary = {}
    for model, by_condition in results.items():
        clean = by_condition["clean"]["accuracy"]
        drops = {}
        for name, entry in by_condition.items():
            entry["drop_points"] = round(100 * (clean - entry["accuracy"]), 2)
            if name not in ("clean", DATASET_CLIP.name):
                drops[name] = entry["drop_points"]
        worst = max(drops, key=drops.get) if drops else None  # none when only clean was recorded
        gains = [v for k, v in drops.items() if k.startswith("gain")]
        summary[model] = {"clean_accuracy": clean,
                          "mean_drop_points": round(float(np.mean(list(drops.values()))), 2) if drops else None,
                          "worst_condition": worst, "worst_drop_points": drops.get(worst),
                          "level_spread_points": round(max(gains + [0.0]) - min(gains + [0.0]), 2)}
        if DATASET_CLIP.name in by_condition:
            reference = by_condition[DATASET_CLIP.name]["accuracy"]
            summary[model]["listener_cost_points"] = round(100 * (reference - clean), 2) + 0.0  # no -0.0
    return summary


def plot(results: dict, path: Path, fold: int = 5) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [c for c in next(iter(results.values()))]
    fig, ax = plt.subplots(figsize=(11, 4.5))
    width = 0.8 / len(results)
    for k, (model, by_condition) in enumerate(results.items()):
        ax.bar(np.arange(len(names)) + k * width - 0.4 + width / 2,
               [100 * by_condition[n]["accuracy"] for n in names], width, label=model)
    ax.set_xticks(np.arange(len(names)), names, rotation=40, ha="right", fontsize=8)
    ax.set(ylabel=f"fold-{fold} accuracy (%)", ylim=(0, 112), yticks=range(0, 101, 20),
           title=f"ESC-50 fold {fold} recorded under each condition, classified by edge.listen")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper center", ncols=len(results), fontsize=8)  # above the bars, which reach 80-90 %
    with staged(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def main(argv=None) -> int:
    from train.data.esc50 import DatasetError, read_clips

    p = argparse.ArgumentParser(prog="python -m benchmarks.robustness", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="ESC-50 folder; its fold 5 is recorded")
    p.add_argument("--fold", type=int, choices=range(1, 6), default=5,
                   help="record this fold instead (4 to choose a remedy without looking at the test fold)")
    p.add_argument("--conditions", nargs="+", metavar="NAME", choices=[c.name for c in CONDITIONS],
                   help="only these conditions (clean and the dataset clip are always included); default all")
    p.add_argument("--models", nargs="+", type=model_files, metavar="MODEL[+MODEL]",
                   help="ONNX models (default: every model in edge/models/, and edge.listen's default set); "
                        "A.onnx+B.onnx is a pair, their probabilities averaged on each window as edge.listen "
                        "--model A.onnx B.onnx does")
    p.add_argument("--clips", type=int, help="only the first N clips of the fold (a quick look; the JSON says so)")
    p.add_argument("--per-clip", action="store_true",
                   help="also write each clip's predicted class under each condition (\"labels\", in the order of "
                        "\"clip_files\"), to see which sounds a condition costs")
    p.add_argument("--out", type=Path, default=RESULTS / "robustness.json", help="JSON; the chart goes beside it")
    args = p.parse_args(argv)
    for program in ("ffmpeg", "espeak-ng"):
        if shutil.which(program) is None:
            print(f"error: {program} is not installed (apt-get install {program})", file=sys.stderr)
            return 2
    models = args.models or shipped_models(REPO / "edge" / "models")
    try:
        names = model_names(models)
    except ValueError as err:
        p.error(f"--models: {err}")
    try:
        clips = [c for c in read_clips(args.data) if c.fold == args.fold][:args.clips]
    except DatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    conditions = [DATASET_CLIP] + [c for c in CONDITIONS
                                   if c.name == "clean" or args.conditions is None or c.name in args.conditions]
    with tempfile.TemporaryDirectory() as tmp:
        results = run(models, clips, conditions, Path(tmp), per_clip=args.per_clip)
    report = {"command": "python -m benchmarks.robustness " + " ".join(sys.argv[1:] if argv is None else argv),
              "commit": git_commit(), "cpu": cpu_name(), "fold": args.fold, "clips": len(clips),
              "models": {name: "+".join(shown_path(f) for f in files) for name, files in zip(names, models)},
              "listener": "edge.listen defaults (hop 1 s, silence gate, no smoothing); label = mean probability "
                          "over the classified windows",
              "summary": summarize(results), "conditions": results}
    if args.per_clip:
        report["clip_files"] = [c.path.name for c in clips]
        report["clip_targets"] = [c.target for c in clips]
    write_json(report, args.out)
    plot(results, args.out.with_suffix(".png"), args.fold)
    print(json.dumps(report["summary"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
