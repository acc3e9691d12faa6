"""Training rooms (train/rooms.py): image-source rooms apart from the benchmark's, each clip heard in them."""
import numpy as np
import pytest
import soundfile as sf

import benchmarks.robustness as benchmark
from train.melcnn import FRONTEND
from train.rooms import HELD_OUT_ROOMS, RoomDistribution, impulse_response, is_held_out, reverberant_log_mels

SMALL_ROOMS = RoomDistribution(length_m=(3.0, 4.0), height_m=(2.4, 2.6), rt60_s=(0.4, 0.5))  # quick to compute


def test_the_benchmarks_rooms_are_never_training_rooms():
    assert sorted(HELD_OUT_ROOMS) == sorted(tuple(size) for size in benchmark.ROOMS.values())
    assert all(is_held_out(size) for size in HELD_OUT_ROOMS)
    assert is_held_out((5.5, 3.7, 2.9)) and not is_held_out((6.5, 4.0, 2.8)) and not is_held_out((4.0, 5.0, 2.8))
    near_the_small_one = RoomDistribution(length_m=(4.5, 5.5), width_ratio=(0.7, 0.9), height_m=(2.4, 3.2),
                                          rt60_s=(0.3, 0.3))
    for seed in range(3):  # redrawn until a room is not the benchmark's, however near the distribution is
        assert len(impulse_response(np.random.default_rng(seed), 16000, near_the_small_one)) > 0


def test_an_impulse_response_decays_for_the_drawn_reverberation_time():
    import pyroomacoustics as pra

    rir = impulse_response(np.random.default_rng(0), 16000, SMALL_ROOMS)
    assert 0.25 < pra.experimental.measure_rt60(rir, fs=16000, decay_db=30) < 0.75  # drawn in 0.4-0.5 s


def test_each_clip_is_heard_in_its_own_rooms_after_the_sound_has_stopped(tmp_path):
    rate = 44100
    t = np.arange(5 * rate) / rate
    paths = []
    for n, hz in enumerate((500.0, 2000.0)):  # a 0.5-s tone, then digital silence
        paths.append(tmp_path / f"burst-{n}.wav")
        sf.write(paths[-1], (0.5 * np.sin(2 * np.pi * hz * t) * (t < 0.5)).astype(np.float32), rate)
    rooms = reverberant_log_mels(paths, FRONTEND, copies=2, seed=0, bank=3, rooms=SMALL_ROOMS, progress=False)
    assert rooms.shape == (2, 2, *FRONTEND.image_shape[1:]) and rooms.dtype == np.float32
    assert np.all(rooms.max(axis=(2, 3)) == 0.0) and rooms.min() >= -FRONTEND.top_db
    frames_per_s = FRONTEND.sample_rate / FRONTEND.hop_length
    after = slice(int(0.6 * frames_per_s), int(0.7 * frames_per_s))  # 0.1-0.2 s after the tone stopped
    dry = FRONTEND.log_mel(sf.read(paths[0], dtype="float32")[0], rate)
    assert dry[:, after].max() == -FRONTEND.top_db  # nothing left without a room
    assert np.all(rooms[0, :, :, after].max(axis=(1, 2)) > -50)  # the room's tail is still ringing
    again = reverberant_log_mels(paths, FRONTEND, copies=2, seed=0, bank=3, rooms=SMALL_ROOMS, progress=False)
    other = reverberant_log_mels(paths, FRONTEND, copies=2, seed=1, bank=3, rooms=SMALL_ROOMS, progress=False)
    assert np.array_equal(rooms, again) and not np.array_equal(rooms, other)  # the rooms come from the seed
    with pytest.raises(ValueError, match="copies and bank must be positive"):
        reverberant_log_mels(paths, FRONTEND, copies=0, seed=0)


def test_the_direct_to_reverberant_ratio_of_an_impulse_response():
    from benchmarks.simulated_rooms import direct_to_reverberant_db

    rir = np.zeros(16000)
    rir[100] = 1.0  # the direct sound, then a tail of a quarter of its energy
    rir[400:800] = np.sqrt(0.25 / 400)
    assert direct_to_reverberant_db(rir, 16000) == pytest.approx(10 * np.log10(4), abs=1e-6)


@pytest.mark.slow
def test_the_simulated_rooms_benchmark_scores_a_run_in_both_kinds_of_room(tmp_path, fake_esc50):
    import json

    import torch

    from benchmarks import simulated_rooms
    from edge.metadata import LOG_MEL_IMAGE
    from train.melcnn import MelCNN

    run = tmp_path / "melcnn-book-seed0"
    run.mkdir()
    kwargs = {"n_classes": 2, "widths": [4], "dropout": 0.0, "pooling": "mean+max", "in_channels": FRONTEND.channels}
    spec = {"kind": LOG_MEL_IMAGE, "sample_rate": FRONTEND.sample_rate, "clip_seconds": 5.0,
            "frontend": FRONTEND.to_json()}
    torch.save({"model_name": "melcnn", "model_kwargs": kwargs, "state_dict": MelCNN(**kwargs).state_dict(),
                "classes": ["low_tone", "high_tone"], "input": spec}, run / "best.pt")
    out = tmp_path / "rooms.json"
    assert simulated_rooms.main([str(run), "--data", str(fake_esc50), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["accuracy"][run.name]) == {"clean"} | {f"{kind} room RT60 {rt60:g} s" for rt60 in (0.3, 0.8)
                                                          for kind in ("image-source", "mel-power")}
    assert all(v in (0.0, 0.5, 1.0) for v in report["accuracy"][run.name].values())  # two clips in fold 4
    assert all(len(drr) == simulated_rooms.RIRS_PER_ROOM for drr in report["direct_to_reverberant_db"].values())
