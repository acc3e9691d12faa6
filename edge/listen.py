"""Listen to a microphone (or a recording) and say what it hears.

    python -m edge.listen                                   # default model, default input device
    python -m edge.listen --model mymodel.onnx --file dog.wav edge/examples/ --json
    python -m edge.listen --list-devices

Every ``--hop`` seconds the latest window (the model's clip length, 5 s) is classified. The audio
callback only copies blocks into a queue; the main thread downmixes them into a ring buffer and runs
the model, so slow inference shows up as skipped windows, never as dropped audio. ``--file`` streams
a recording (or every audio file of a folder) through the same ring buffer, so it sees exactly the
windows the microphone would. Without ``--model`` it runs the first of DEFAULT_MODELS found in edge/models
(three shipped MelCNN seeds); ``--model A B`` averages any models. Runs with numpy, scipy, onnxruntime,
soundfile, soxr and sounddevice only (the ``edge`` extra).
"""
from __future__ import annotations

import argparse
import collections
import json
import queue
import signal
import sys
import os
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from edge.audio import AudioFileError, downmix, load_audio
from edge.classifier import Classifier, ModelFileError, averaged
from edge.metadata import ModelMetadataError

FALLBACK_RATES = (48000, 44100, 32000, 16000)
DEVICE_TIMEOUT_S = 3.0  # no audio for this long: the device is gone
LATENCY_HISTORY = 10000  # windows kept for the latency statistics (bounded for long runs)
MODELS_DIR = Path(__file__).resolve().parent / "models"
# without --model: the first of these whose files are all in edge/models (their probabilities averaged)
DEFAULT_MODELS = (("melcnn-int8.onnx", "melcnn-seed1-int8.onnx", "melcnn-seed2-int8.onnx"),
                  ("melcnn-int8.onnx", "melcnn-seed1-int8.onnx"), ("melcnn-int8.onnx",), ("audionet-int8.onnx",))
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".aif", ".aiff")
GATE_FRAME_S = 0.05  # the silence gate compares the levels of 50-ms frames
FLOOR_SECONDS = 30.0  # the noise floor is the quietest background heard over this long
LOW_MEMORY_ABOVE_MB = 50  # larger model files load with --low-memory unless --no-low-memory


class ListenError(RuntimeError):
    """A problem with the audio input, reported as one line."""


class DeviceLost(ListenError):
    """The input device stopped mid-run; carries the listener so its statistics can still be shown."""

    def __init__(self, message: str, listener: "Listener"):
        super().__init__(message)
        self.listener = listener


def default_models(folder: Path | None = None) -> list:
    """The models used without ``--model``: the first set of DEFAULT_MODELS whose files are all in ``folder``
    (edge/models). Three seeds of one recipe are the default: on a fold none of them trained on, a pair gained
    1.8 points over one seed and three 0.6 over a pair, at one inference more each (docs/experiments.md)."""
    folder = MODELS_DIR if folder is None else folder
    for names in DEFAULT_MODELS:
        if all((folder / name).is_file() for name in names):
            return [folder / name for name in names]
    looked_for = " or ".join("+".join(names) for names in DEFAULT_MODELS)
    raise ModelFileError(f"no --model given and no default model in {folder} (looked for {looked_for}); export "
                         f"one and copy it there under such a name (`python -m export.to_onnx RUN_DIR --int8`, then "
                         f"`cp RUN_DIR/model.int8.onnx {folder / 'melcnn-int8.onnx'}`), or pass --model FILE.onnx")


def wants_low_memory(model: Path, flag: bool | None) -> bool:
    """--low-memory / --no-low-memory, else on for model files over LOW_MEMORY_ABOVE_MB."""
    if flag is not None:
        return flag
    return model.is_file() and model.stat().st_size > LOW_MEMORY_ABOVE_MB * 1e6


def audio_files(paths) -> list:
    """Files named on the command line, in order; a folder stands for its audio files, sorted by name."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                raise AudioFileError(f"{path}: folder holds no audio files ({', '.join(AUDIO_SUFFIXES)})")
            files.extend(found)
        else:
            files.append(path)  # load_audio names it if it is missing or unreadable
    return files


class RingBuffer:
    """The most recent ``size`` samples of a mono stream, and how many were ever written."""

    def __init__(self, size: int):
        self.data = np.zeros(size, np.float32)
        self.pos = 0
        self.count = 0

    def write(self, samples: np.ndarray):
        size = len(self.data)
        self.count += len(samples)
        samples = samples[-size:]
        first = min(len(samples), size - self.pos)
        self.data[self.pos:self.pos + first] = samples[:first]
        self.data[:len(samples) - first] = samples[first:]
        self.pos = (self.pos + len(samples)) % size

    def latest(self) -> np.ndarray:
        """The buffered samples in time order (fewer than ``size`` until it has filled)."""
        if self.count < len(self.data):
            return self.data[:self.count].copy()
        return np.concatenate((self.data[self.pos:], self.data[:self.pos]))


def frame_levels_dbfs(samples: np.ndarray, rate: int) -> np.ndarray:
    """RMS level of each GATE_FRAME_S frame in dBFS (floored at -120); one frame for shorter input."""
    size = max(1, int(round(GATE_FRAME_S * rate)))
    frames = samples[:len(samples) // size * size].reshape(-1, size) if len(samples) >= size else samples[None]
    power = np.mean(np.square(frames, dtype=np.float64), axis=1) if frames.size else np.zeros(1)
    return np.maximum(10.0 * np.log10(np.maximum(power, 1e-12)), -120.0)


def level_dbfs(samples: np.ndarray) -> float:
    """RMS level in dB relative to full scale (floored at -120)."""
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if len(samples) else 0.0
    return max(20.0 * np.log10(max(rms, 1e-6)), -120.0)


class Listener:
    """Turns a stream of mono blocks into one report per window: classify, smooth, gate, print.

    One listener serves a live stream or a series of files (:meth:`start` before each); the counts
    and latency statistics cover everything it has seen.
    """

    def __init__(self, classifier: Classifier, rate: int, args):
        self.classifier = classifier
        self.args = args
        self.latencies_ms = {part: collections.deque(maxlen=LATENCY_HISTORY)
                             for part in ("frontend", "inference", "total")}
        self.windows = 0
        self.skipped = 0
        self.overflows = 0
        self.invalid = 0
        self.start(rate)

    def start(self, rate: int, source: str | None = None):
        """Begin a new stream (a file, or the device) at ``rate``: empty ring buffer, no smoothing history."""
        self.rate = rate
        self.source = source
        self.window = int(round(self.classifier.clip_seconds * rate))
        self.hop = max(1, int(round(self.args.hop * rate)))
        self.ring = RingBuffer(self.window)
        self.next_end = self.window
        self.history = collections.deque(maxlen=self.args.smooth)
        self.floors = collections.deque(maxlen=max(1, int(np.ceil(FLOOR_SECONDS / self.args.hop))))
        self.source_windows = 0

    def push(self, block: np.ndarray):
        """Add mono samples; classify the latest window each time a hop boundary is crossed."""
        self.ring.write(np.asarray(block, np.float32))
        if self.ring.count >= self.next_end:
            behind = (self.ring.count - self.next_end) // self.hop
            self.skipped += behind
            self.next_end += (behind + 1) * self.hop
            self.report(self.ring.latest())

    def finish(self):
        """A stream shorter than one window still gets one (zero-padded) report."""
        if self.source_windows == 0 and self.ring.count > 0:
            self.report(self.ring.latest())

    def report(self, window: np.ndarray):
        timing = {"frontend": None, "inference": None, "total": None}
        finite = bool(np.isfinite(window).all())
        level = floor = peak = float("nan")
        if finite:
            frames = frame_levels_dbfs(window, self.rate)
            self.floors.append(float(np.percentile(frames, 10)))
            level, floor, peak = level_dbfs(window), min(self.floors), float(frames.max())
        if not finite:  # a broken driver or file: say so, count it, and keep listening
            self.invalid += 1
            self.history.clear()
            status, top = "invalid", []
        elif self.is_silence(peak, floor):
            self.history.clear()
            status, top = "silence", []
        else:
            start = time.perf_counter()
            features = self.classifier.features(window, self.rate)
            middle = time.perf_counter()
            self.history.append(self.classifier.infer(features))
            end = time.perf_counter()
            timing = {"frontend": (middle - start) * 1000, "inference": (end - middle) * 1000,
                      "total": (end - start) * 1000}
            for part, ms in timing.items():
                self.latencies_ms[part].append(ms)
            top = self.classifier.top_k(np.mean(self.history, axis=0), self.args.top_k)
            status = "ok" if top[0][1] >= self.args.threshold else "uncertain"
        self.windows += 1
        self.source_windows += 1
        end_s = self.ring.count / self.rate
        rounded = {part: None if ms is None else round(ms, 2) for part, ms in timing.items()}
        source = {"file": self.source} if self.source else {}
        self.emit({"time": datetime.now().isoformat(timespec="milliseconds"), **source,
                   "start_s": round(max(0.0, end_s - self.window / self.rate), 3), "end_s": round(end_s, 3),
                   "status": status, "label": top[0][0] if status == "ok" else None,
                   "top": [{"label": label, "probability": round(p, 4)} for label, p in top],
                   "level_dbfs": round(level, 1) if finite else None,
                   "floor_dbfs": round(floor, 1) if finite else None, "latency_ms": rounded["total"],
                   "frontend_ms": rounded["frontend"], "inference_ms": rounded["inference"],
                   "overflows": self.overflows, "skipped": self.skipped, "invalid": self.invalid})

    def is_silence(self, peak_dbfs: float, floor_dbfs: float) -> bool:
        """Nothing but background: the loudest 50-ms frame rises less than ``--gate-db`` above the noise
        floor (the quietest tenth of the frames of the last FLOOR_SECONDS), and stays below ``--always-db``.

        Relative to the floor, a quiet sound in a quiet room is still a sound, whatever the microphone's
        gain; the absolute ``--always-db`` keeps a loud steady sound (rain, an engine) from being taken for
        background once it has lasted long enough to become the floor.
        """
        return peak_dbfs < self.args.always_db and peak_dbfs < floor_dbfs + self.args.gate_db

    def emit(self, result: dict):
        if self.args.json:
            line = json.dumps(result)
        else:
            when = f"{Path(self.source).name}  {result['end_s']:5.1f}s" if self.source else result["time"][11:19]
            ranked = " | ".join(f"{t['label']} {t['probability']:.2f}" for t in result["top"])
            if result["status"] == "invalid":
                line = f"{when}  invalid window (non-finite samples; {self.invalid} so far)"
            elif result["status"] == "silence":
                line = f"{when}  silence ({result['level_dbfs']:.0f} dBFS, background {result['floor_dbfs']:.0f} dBFS)"
            elif result["status"] == "uncertain":
                line = f"{when}  uncertain ({ranked})"
            else:
                line = f"{when}  {ranked}"
            if self.overflows or self.skipped:
                line += f"  [input overflows {self.overflows}, windows skipped {self.skipped}]"
        print(line, flush=True)

    def summary(self) -> str:
        """Window count, latency statistics (front end + inference) and input problems, one line."""
        text = f"windows {self.windows}"
        total = self.latencies_ms["total"]
        if total:
            def stats(part):
                ms = np.asarray(self.latencies_ms[part])
                return f"median {np.median(ms):.1f} ms, p95 {np.percentile(ms, 95):.1f} ms"
            text += (f"; latency per window {stats('total')} (front end {stats('frontend')}; inference "
                     f"{stats('inference')}; last {len(total)} classified)")
        return text + (f"; input overflows {self.overflows}; windows skipped {self.skipped}; "
                       f"invalid windows {self.invalid}")


def classify_file(listener: Listener, path):
    """Stream a recording through the listener, split at the window boundaries the microphone would hit."""
    waveform, rate = load_audio(path)
    listener.start(rate, source=str(path))
    ends = range(listener.window, len(waveform) + 1, listener.hop)
    for block in np.split(waveform, list(ends)):
        listener.push(block)
    listener.finish()


def classify_files(classifier: Classifier, args) -> tuple:
    """Classify every file of ``--file`` (folders expanded); (listener, number of unreadable files, whether Ctrl-C
    or SIGTERM stopped it before the last file).

    An unreadable file is reported on stderr and skipped, so one bad file does not stop a folder.
    """
    files = audio_files(args.file)
    listener = Listener(classifier, classifier.sample_rate, args)
    failed = 0
    try:
        for path in files:
            try:
                classify_file(listener, path)
            except AudioFileError as err:
                print(f"edge.listen: error: {err}", file=sys.stderr)
                failed += 1
    except KeyboardInterrupt:
        return listener, failed, True
    return listener, failed, False


def import_sounddevice():
    """sounddevice, imported only for live input (it needs the PortAudio library)."""
    try:
        import sounddevice
    except OSError as err:
        raise ListenError(f"PortAudio is not available ({err}); "
                          "install it (Debian: apt install libportaudio2)") from None
    return sounddevice


def input_device(sd, device):
    """Device info for ``--device`` (index or name fragment), or the default input."""
    if device is not None and device.isdigit():
        device = int(device)
    try:
        return sd.query_devices(device, kind="input")
    except (ValueError, sd.PortAudioError) as err:
        wanted = "default input device" if device is None else f"input device {device!r}"
        raise ListenError(f"no usable {wanted} ({err}); see --list-devices") from None


def supported_rate(sd, info, channels: int) -> int:
    """The device's default sample rate, or the first common rate it accepts."""
    for rate in dict.fromkeys([int(info["default_samplerate"]), *FALLBACK_RATES]):
        try:
            sd.check_input_settings(device=info["index"], channels=channels, samplerate=rate, dtype="float32")
            return rate
        except (ValueError, sd.PortAudioError):
            continue
    raise ListenError(f"input device {info['name']!r} accepts none of the rates {sorted(set(FALLBACK_RATES))}")


def list_devices() -> str:
    sd = import_sounddevice()
    default_input = sd.default.device[0]
    lines = []
    for info in sd.query_devices():
        if info["max_input_channels"] > 0:
            mark = "*" if info["index"] == default_input else " "
            lines.append(f"{mark} {info['index']:2d}  {info['name']}  ({info['max_input_channels']} ch, "
                         f"default {info['default_samplerate']:.0f} Hz)")
    return "\n".join(lines) if lines else "no input devices found"


def stop_on_sigterm():
    """Make SIGTERM (systemctl stop) end live capture or a run over files like Ctrl-C: clean stop, statistics
    printed."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, interrupt)


def listen_live(classifier: Classifier, args) -> Listener:
    """Capture from the input device until --seconds of audio, Ctrl-C/SIGTERM, or the device goes away."""
    sd = import_sounddevice()
    info = input_device(sd, args.device)
    channels = min(2, info["max_input_channels"])
    rate = supported_rate(sd, info, channels)
    listener = Listener(classifier, rate, args)
    blocks = queue.Queue()

    def callback(indata, frames, time_info, status):
        if status.input_overflow:
            listener.overflows += 1
        blocks.put(indata.copy())

    stop_after = None if args.seconds is None else int(args.seconds * rate)
    try:
        with sd.InputStream(device=info["index"], channels=channels, samplerate=rate, dtype="float32",
                            callback=callback):
            print(f"listening on {info['name']!r} at {rate} Hz, {channels} ch; first result after "
                  f"{classifier.clip_seconds:g} s, then every {args.hop:g} s (Ctrl-C stops)", file=sys.stderr)
            while stop_after is None or listener.ring.count < stop_after:
                try:
                    chunk = [blocks.get(timeout=DEVICE_TIMEOUT_S)]
                except queue.Empty:
                    raise DeviceLost(f"input device {info['name']!r} stopped delivering audio for "
                                     f"{DEVICE_TIMEOUT_S:g} s (disconnected?)", listener) from None
                while not blocks.empty():
                    chunk.append(blocks.get_nowait())
                listener.push(downmix(np.concatenate(chunk), rate))
    except KeyboardInterrupt:
        pass
    except sd.PortAudioError as err:
        raise DeviceLost(f"input device {info['name']!r}: {err}", listener) from None
    return listener


def positive(kind):
    def parse(text):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    return parse


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m edge.listen", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", nargs="+", metavar="FILE",
                   help="exported ONNX model (python -m export.to_onnx); several: their probabilities are averaged "
                        f"on each window (default: edge/models/{' + '.join(DEFAULT_MODELS[0])}, averaged)")
    p.add_argument("--file", nargs="+", metavar="PATH",
                   help="classify these recordings (WAV/FLAC/OGG, any rate and channels; a folder means all its "
                        "audio files, sorted) instead of the microphone")
    p.add_argument("--device", help="input device index or name fragment (default: the system default input)")
    p.add_argument("--list-devices", action="store_true", help="list input devices and exit")
    p.add_argument("--hop", type=positive(float), default=1.0, help="seconds between windows")
    p.add_argument("--top-k", type=positive(int), default=3, help="labels shown per window")
    p.add_argument("--smooth", type=positive(int), default=1, help="average probabilities over the last N windows")
    p.add_argument("--threshold", type=float, default=0.3,
                   help="below this top-1 probability report 'uncertain' instead of a label")
    p.add_argument("--gate-db", type=float, default=10.0,
                   help="report 'silence' unless the window's loudest 50-ms frame rises this many dB above the "
                        "background (the quietest tenth of the last 30 s); 0 classifies every window")
    p.add_argument("--always-db", type=float, default=-40.0,
                   help="windows whose loudest 50-ms frame reaches this level (dBFS) are always classified")
    p.add_argument("--threads", type=positive(int), default=min(4, os.cpu_count() or 1),
                   help="onnxruntime intra-op threads (default: CPU cores, at most 4)")
    p.add_argument("--low-memory", action=argparse.BooleanOptionalAction,
                   help="lighter graph optimisation: much lower peak memory for large models, somewhat slower "
                        f"inference (default: on for model files over {LOW_MEMORY_ABOVE_MB} MB, e.g. fp32 ResNet-50)")
    p.add_argument("--seconds", type=positive(float), help="stop the microphone after this many seconds of audio")
    p.add_argument("--json", action="store_true", help="print one JSON object per window")
    args = p.parse_args(argv)
    if args.seconds is not None and args.file:
        p.error("--seconds stops the microphone; --file classifies every window of each file")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    failed, interrupted = 0, False
    try:
        if args.list_devices:
            print(list_devices())
            return 0
        models = [Path(m) for m in args.model] if args.model else default_models()
        members = [Classifier(m, threads=args.threads, low_memory=wants_low_memory(m, args.low_memory))
                   for m in models]
        classifier = averaged(members)
        stop_on_sigterm()
        if args.file:
            listener, failed, interrupted = classify_files(classifier, args)
        else:
            listener = listen_live(classifier, args)
    except DeviceLost as err:
        print(err.listener.summary(), file=sys.stderr)
        print(f"edge.listen: error: {err}", file=sys.stderr)
        return 1
    except (ModelFileError, ModelMetadataError, AudioFileError, ListenError) as err:
        print(f"edge.listen: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C while loading the models (files and live capture handle their own)
        return 130
    if listener.windows or not args.file:
        print(listener.summary(), file=sys.stderr)
    return 130 if interrupted else 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
