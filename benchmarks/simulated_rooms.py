"""Does a log-mel model cope with real rooms, or only with the rooms it was trained on?

    python -m benchmarks.simulated_rooms RUN [RUN ...] --data data/ESC-50 --out FILE.json

Each clip of the fold (4 by default: choosing a recipe never looks at the test fold) is heard in one of the
robustness benchmark's image-source rooms (RT60 0.3 and 0.8 s, pyroomacoustics), and, paired with it, in the
reverberation train.augment.RecordingConditions simulates on mel power, at the same RT60 and at that
room's measured direct-to-reverberant ratio (DRR). Runs are scored on whole windows with their best.pt, as
training scores them. A model that has learnt rooms loses about as much in both; one that has learnt the
simulation loses far more in the image-source rooms.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from benchmarks.measuring import machine
from benchmarks.robustness import RIRS_PER_ROOM, ROOMS, SEED, reverb, room_impulse_response
from edge.atomic import write_json
from edge.audio import load_audio
from edge.frontend import FrontEnd
from edge.metadata import LOG_MEL_IMAGE
from edge.provenance import git_commit
from train.augment import RecordingConditions, db_to_power
from train.data.esc50 import read_clips
from train.engine import load_best
from train.models import model_from_checkpoint

def direct_to_reverberant_db(rir: np.ndarray, rate: int, direct_ms: float = 2.5) -> float:
    """Energy within ``direct_ms`` of the impulse response's peak against the energy after it (dB)."""
    peak, half = int(np.argmax(np.abs(rir))), int(direct_ms * 1e-3 * rate)
    direct = np.sum(rir[max(0, peak - half):peak + half] ** 2)
    return float(10 * np.log10(direct / max(np.sum(rir[peak + half:] ** 2), 1e-20)))


def heard(frontend: FrontEnd, waves: list, rng: np.random.Generator) -> tuple:
    """({condition: [dB log-mel per clip]}, {RT60: [DRR of each room]}) for the clips at ``frontend``'s rate."""
    rate = frontend.sample_rate
    log_mels = {"clean": [frontend.log_mel(x, rate) for x in waves]}
    drr = {}
    room_of_clip = [i % RIRS_PER_ROOM for i in range(len(waves))]
    for rt60 in sorted(ROOMS):
        rirs = [room_impulse_response(rt60, rate, rng) for _ in range(RIRS_PER_ROOM)]
        drr[rt60] = [round(direct_to_reverberant_db(h, rate), 2) for h in rirs]
        simulations = [RecordingConditions(frontend, rt60_s=(rt60, rt60), drr_db=(d, d)) for d in drr[rt60]]
        log_mels[f"image-source room RT60 {rt60:g} s"] = [frontend.log_mel(reverb(x, rirs[j]), rate)
                                                          for x, j in zip(waves, room_of_clip)]
        log_mels[f"mel-power room RT60 {rt60:g} s"] = [simulations[j].to_db(simulations[j].reverberate(db_to_power(d)))
                                                       for d, j in zip(log_mels["clean"], room_of_clip)]
    return log_mels, drr


def accuracy(model, frontend: FrontEnd, log_mels: list, targets: np.ndarray) -> float:
    with torch.no_grad():
        images = torch.from_numpy(np.stack([frontend.image(d) for d in log_mels]))
        predicted = torch.cat([model(images[i:i + 50]).argmax(-1) for i in range(0, len(images), 50)])
    return round(float((predicted.numpy() == targets).mean()), 4)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.simulated_rooms", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="log-mel training runs (their best.pt)")
    p.add_argument("--data", required=True, help="ESC-50 folder")
    p.add_argument("--fold", type=int, choices=range(1, 6), default=4)
    p.add_argument("--out", type=Path, required=True, help="JSON to write")
    args = p.parse_args(argv)
    checkpoints = {run: load_best(run) for run in args.runs}
    for run, checkpoint in checkpoints.items():
        if checkpoint["input"]["kind"] != LOG_MEL_IMAGE:
            print(f"error: {run}: not a log-mel model", file=sys.stderr)
            return 2
    clips = [c for c in read_clips(args.data) if c.fold == args.fold]
    targets = np.array([c.target for c in clips])
    results, rooms, cache = {}, {}, {}
    for run, checkpoint in checkpoints.items():
        frontend = FrontEnd.from_json(checkpoint["input"]["frontend"])
        key = frontend.log_mel_digest()  # runs whose images differ but whose log-mels agree hear them once
        if key not in cache:  # the same rooms for every run, from the benchmark's own seed
            waves = [frontend.clip(*load_audio(c.path)) for c in clips]
            cache[key], rooms = heard(frontend, waves, np.random.default_rng([SEED, 4]))
        model = model_from_checkpoint(checkpoint).eval()
        results[run.name] = {name: accuracy(model, frontend, log_mels, targets)
                             for name, log_mels in cache[key].items()}
        print(run.name, results[run.name], flush=True)
    write_json({"command": "python -m benchmarks.simulated_rooms " + " ".join(sys.argv[1:] if argv is None else argv),
                "commit": git_commit(), "host": machine(torch=torch.__version__), "fold": args.fold,
                "clips": len(clips), "direct_to_reverberant_db": {f"RT60 {k:g} s": v for k, v in rooms.items()},
                "accuracy": results}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
