"""`python -m edge.listen` through the real capture path: a PulseAudio virtual microphone, PortAudio, ALSA.

Each test starts its own PulseAudio daemon (user mode, private socket, no autospawn) with
``module-pipe-source`` reading a FIFO; a thread writes audio into the FIFO in real time (silence when
it has nothing to play, as a quiet room would). The listener runs as a subprocess on PortAudio's
ALSA ``pulse`` device and is judged only by what it prints.
"""
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edge_models import HIGH_HZ, LOW_HZ, tone

REPO = Path(__file__).resolve().parents[1]
MIC_RATE = 48000  # the virtual microphone's rate; PulseAudio converts it to what the client opens
CHUNK_S = 0.02

pytestmark = pytest.mark.skipif(shutil.which("pulseaudio") is None or shutil.which("pactl") is None,
                                reason="PulseAudio is not installed (apt install pulseaudio pulseaudio-utils "
                                       "libasound2-plugins); tests/run.sh installs it when run as root")


class PulseServer:
    """A private PulseAudio daemon whose default source is a FIFO fed by :class:`Feeder`."""

    def __init__(self, folder: Path, rate: int = MIC_RATE):
        self.folder = folder
        self.rate = rate
        self.socket = folder / "native"
        self.fifo = folder / "mic.fifo"
        client_conf = folder / "client.conf"
        client_conf.write_text("autospawn = no\n")
        self.env = {**os.environ, "PULSE_SERVER": f"unix:{self.socket}", "PULSE_CLIENTCONFIG": str(client_conf),
                    "PULSE_RUNTIME_PATH": str(folder / "runtime"), "HOME": str(folder)}
        script = folder / "default.pa"
        script.write_text(
            f"load-module module-native-protocol-unix auth-anonymous=1 socket={self.socket}\n"
            f"load-module module-pipe-source source_name=virtual_mic file={self.fifo} format=s16le "
            f"rate={rate} channels=1\n"
            "set-default-source virtual_mic\n")
        self.process = subprocess.Popen(
            ["pulseaudio", "--daemonize=no", "-n", "-F", str(script), "--exit-idle-time=-1",
             "--use-pid-file=no", "--system=false", "--disallow-exit", f"--log-target=file:{folder / 'pulse.log'}"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while not self.ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                log = (folder / "pulse.log").read_text() if (folder / "pulse.log").exists() else ""
                raise RuntimeError(f"PulseAudio did not start (exit {self.process.returncode}):\n{log[-3000:]}")
            time.sleep(0.2)

    def ready(self) -> bool:
        if not (self.socket.exists() and self.fifo.exists()):
            return False
        info = subprocess.run(["pactl", "info"], env=self.env, capture_output=True, text=True)
        return info.returncode == 0 and "Default Source: virtual_mic" in info.stdout

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Feeder(threading.Thread):
    """Writes queued clips into the FIFO at real-time pace as 16-bit mono; silence when the queue is empty."""

    def __init__(self, fifo: Path, rate: int = MIC_RATE):
        super().__init__(daemon=True)
        self.fifo, self.rate = fifo, rate
        self.pending = collections.deque()
        self.stopping = threading.Event()
        self.played_s = 0.0
        self.start()

    def play(self, audio: np.ndarray):
        """Queue mono float audio at the feeder's rate; returns when it has all been written."""
        done = threading.Event()
        pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
        self.pending.extend(np.array_split(pcm, max(1, round(len(pcm) / (self.rate * CHUNK_S)))))
        self.pending.append(done)
        return done

    def run(self):
        silence = np.zeros(int(self.rate * CHUNK_S), "<i2")
        fd = os.open(self.fifo, os.O_WRONLY)
        try:
            clock = time.monotonic()
            while not self.stopping.is_set():
                item = self.pending.popleft() if self.pending else silence
                if isinstance(item, threading.Event):
                    item.set()
                    continue
                try:
                    os.write(fd, item.tobytes())
                except BrokenPipeError:  # the daemon went away (the device-lost test)
                    return
                self.played_s += len(item) / self.rate
                clock += len(item) / self.rate
                delay = clock - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                elif delay < -0.2:  # the writer was held up: carry on in real time, never in a burst
                    clock = time.monotonic()
        finally:
            os.close(fd)

    def stop(self):
        self.stopping.set()
        self.join(5)


@pytest.fixture
def mic(tmp_path):
    """(PulseServer, Feeder) for one test."""
    server = PulseServer(tmp_path)
    feeder = Feeder(server.fifo)
    yield server, feeder
    feeder.stop()
    server.stop()


def start_listener(server: PulseServer, model, *argv) -> subprocess.Popen:
    """`python -m edge.listen --model MODEL...` on the pulse device (``model``: a file or a list of files averaged);
    returns once it reports that it is listening.

    Ctrl-C is restored for it: a test run started in the background (``pytest &``) has SIGINT ignored,
    and a child would inherit that and never see the Ctrl-C the tests send.
    """
    models = model if isinstance(model, list) else [model]
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        listener = subprocess.Popen([sys.executable, "-m", "edge.listen", "--model", *map(str, models),
                                     "--device", "pulse", *map(str, argv)], cwd=REPO, env=server.env, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    finally:
        signal.signal(signal.SIGINT, previous)
    first = listener.stderr.readline()
    assert first.startswith("listening on 'pulse' at "), first + listener.stderr.read()
    return listener


def finish(listener: subprocess.Popen, timeout: float) -> tuple:
    """(exit code, JSON windows, stderr) once the listener has exited."""
    out, err = listener.communicate(timeout=timeout)
    assert "Traceback" not in err, err
    return listener.returncode, [json.loads(line) for line in out.splitlines()], err


def label_runs(windows) -> list:
    """Confident labels in order of appearance with how many windows each held: [(label, count), ...]."""
    runs = []
    for w in windows:
        if w["status"] == "ok":
            if runs and runs[-1][0] == w["label"]:
                runs[-1][1] += 1
            else:
                runs.append([w["label"], 1])
    return [tuple(r) for r in runs]


def assert_heard_in_order(windows, expected, min_windows: int):
    """Each expected label holds the majority of a run of >= min_windows windows, in the order played."""
    runs = [label for label, count in label_runs(windows) if count >= min_windows]
    assert runs == expected, f"label runs {label_runs(windows)}, expected {expected} (>= {min_windows} each)"


@pytest.mark.parametrize("kind", ["image", "waveform"])
def test_live_tones_are_heard_in_order(mic, tone_models, kind):
    server, feeder = mic
    listener = start_listener(server, tone_models[kind], "--seconds", 15, "--json")
    feeder.play(np.concatenate([tone(LOW_HZ, 7.0, MIC_RATE)[:, 0], tone(HIGH_HZ, 8.0, MIC_RATE)[:, 0]]))
    code, windows, err = finish(listener, timeout=60)
    assert code == 0, err
    assert [w["end_s"] for w in windows] == pytest.approx([5.0 + k for k in range(11)], abs=0.05)
    assert_heard_in_order(windows, ["low_tone", "high_tone"], min_windows=3)
    counts = [(w["overflows"], w["skipped"]) for w in windows]
    assert counts == sorted(counts) and f"input overflows {counts[-1][0]}; windows skipped {counts[-1][1]}" in err
    assert "windows 11; latency per window median" in err and "front end median" in err


def test_live_silence_is_reported_not_classified(mic, tone_models):
    server, feeder = mic
    listener = start_listener(server, tone_models["image"], "--seconds", 6, "--json")
    code, windows, err = finish(listener, timeout=30)
    assert code == 0, err
    assert [w["status"] for w in windows] == ["silence", "silence"] and windows[0]["top"] == []


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "systemctl-stop"])
def test_ctrl_c_stops_cleanly_with_latency_statistics(mic, tone_models, stop):
    server, feeder = mic
    feeder.play(tone(HIGH_HZ, 20.0, MIC_RATE)[:, 0])
    listener = start_listener(server, tone_models["image"])
    lines = [listener.stdout.readline() for _ in range(2)]
    assert all("high_tone" in line.split("|")[0] for line in lines), lines
    listener.send_signal(stop)
    out, err = listener.communicate(timeout=30)
    assert listener.returncode == 0 and "Traceback" not in err, err
    assert "latency per window median" in err and "p95" in err and "input overflows" in err


def test_device_lost_mid_run_exits_with_a_message(mic, tone_models):
    server, feeder = mic
    feeder.play(tone(LOW_HZ, 30.0, MIC_RATE)[:, 0])
    listener = start_listener(server, tone_models["image"], "--json")
    assert json.loads(listener.stdout.readline())["label"] == "low_tone"
    server.stop()  # the microphone's server dies: as good as unplugging it
    code, _, err = finish(listener, timeout=60)
    assert code == 1
    assert "edge.listen: error: input device 'pulse'" in err, err
    assert "latency per window median" in err  # what it did before the loss is still reported


def real_models():
    """The trained default models from edge/models (or $EDGE_TEST_MODEL), else None."""
    from edge.classifier import ModelFileError
    from edge.listen import default_models

    if os.environ.get("EDGE_TEST_MODEL"):
        return [Path(os.environ["EDGE_TEST_MODEL"])]
    try:
        return default_models()
    except ModelFileError:
        return None


def robust_clips(classifier, clips, n: int) -> list:
    """Up to n clips of distinct classes that the model gets right at any loop offset (file path, no capture)."""
    from edge.audio import load_audio

    chosen, seen = [], set()
    for clip in clips:
        if clip.category in seen or clip.category not in classifier.classes:
            continue
        wave, rate = load_audio(clip.path)
        shifts = [0, len(wave) // 4, len(wave) // 2, 3 * len(wave) // 4]
        if all(classifier.top_k(classifier.predict(np.roll(wave, s), rate), 1)[0][0] == clip.category
               for s in shifts):
            chosen.append((clip, wave, rate))
            seen.add(clip.category)
        if len(chosen) == n:
            break
    return chosen


@pytest.mark.realdata
@pytest.mark.slow
def test_live_esc50_clips_with_a_trained_model(mic):
    """Real ESC-50 test-fold clips, each looped for 15 s, are reported as their classes, in order."""
    import soxr

    from edge.classifier import Classifier, averaged
    from train.data.esc50 import read_clips

    if not os.environ.get("ESC50_DIR"):
        pytest.skip("set ESC50_DIR to the ESC-50 folder")
    models = real_models()
    if models is None:
        pytest.skip("no trained model in edge/models (or $EDGE_TEST_MODEL); the tone-model tests cover the path")
    members = [Classifier(model) for model in models]
    classifier = averaged(members)
    test_fold = [c for c in read_clips(os.environ["ESC50_DIR"]) if c.fold == 5]
    chosen = robust_clips(classifier, test_fold, 3)
    assert len(chosen) >= 2, f"{models}: fewer than two test-fold clips classified robustly"
    server, feeder = mic
    audio = np.concatenate([np.tile(soxr.resample(wave, rate, MIC_RATE), 3) for _, wave, rate in chosen])
    listener = start_listener(server, models, "--seconds", len(audio) / MIC_RATE, "--json")
    feeder.play(audio.astype(np.float32))
    code, windows, err = finish(listener, timeout=60 + len(audio) / MIC_RATE)
    assert code == 0, err
    assert_heard_in_order(windows, [clip.category for clip, _, _ in chosen], min_windows=4)


@pytest.mark.slow
def test_soak_memory_does_not_grow(mic, tone_models):
    """150 s of streamed audio, a window every 0.5 s: RSS after warm-up stays within a few MB."""
    psutil = pytest.importorskip("psutil")
    server, feeder = mic
    seconds, warmup = 150, 40
    pattern = [tone(LOW_HZ, 5.0, MIC_RATE)[:, 0], np.zeros(MIC_RATE, np.float32), tone(HIGH_HZ, 5.0, MIC_RATE)[:, 0]]
    feeder.play(np.concatenate(pattern * (seconds // 11 + 1)))
    listener = start_listener(server, tone_models["image"], "--seconds", seconds, "--hop", 0.5, "--json")
    process = psutil.Process(listener.pid)
    samples, result = [], {}  # samples: (seconds since start, RSS in MiB)
    reader = threading.Thread(target=lambda: result.update(zip(("out", "err"), listener.communicate())), daemon=True)
    start = time.monotonic()
    reader.start()
    while reader.is_alive() and time.monotonic() - start < seconds + 60:
        try:
            samples.append((time.monotonic() - start, process.memory_info().rss / 2**20))
        except psutil.NoSuchProcess:
            break
        reader.join(1.0)
    reader.join(30)
    out, err = result["out"], result["err"]
    assert listener.returncode == 0 and "Traceback" not in err, err
    windows = [json.loads(line) for line in out.splitlines()]
    assert len(windows) >= (seconds - 5) / 0.5 - 1
    settled = [rss for t, rss in samples if warmup <= t < warmup + 20]
    late = [rss for t, rss in samples if t >= seconds - 20]
    assert settled and late, samples
    growth = max(late) - float(np.median(settled))
    assert growth <= 5.0, f"RSS grew {growth:.1f} MiB after warm-up: {[(round(t), round(r, 1)) for t, r in samples]}"
