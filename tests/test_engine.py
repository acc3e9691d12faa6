"""The shared training engine: stages, resume after kill -9, LR finder, outputs, CLI helpers."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from train.audionet import AudioNet
from train.melcnn import MelCNN
from train.models import model_from_checkpoint
from train import engine
from train.augment import Mixup
from train.data.esc50 import parse_splits
from train.runs import protocol_text
from train.engine import Trainer, checkpoint_info, confusion_matrix, jensen_shannon, resolve_precision, suggest_lr

REPO = Path(__file__).resolve().parents[1]
SAMPLES = 4096  # AudioNet is fully convolutional: short clips keep these tests fast


def toy_set(n: int, seed: int) -> TensorDataset:
    """Noisy clips whose class (of 4) sets the frequency of a sine."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    t = torch.arange(SAMPLES) / 8000
    x = torch.sin(2 * torch.pi * (200 + 400 * y[:, None]) * t) + 0.3 * torch.randn(n, SAMPLES, generator=g)
    return TensorDataset(x[:, None].float(), y)


def make_trainer(run_dir, **kwargs) -> Trainer:
    torch.manual_seed(0)
    model = AudioNet(n_classes=4, depth=5, sample_rate=8000)
    info = checkpoint_info("audionet", {"n_classes": 4, "depth": 5, "sample_rate": 8000}, list("abcd"),
                           {"kind": "waveform", "sample_rate": 8000, "clip_seconds": 0.512, "frontend": None})
    return Trainer(model, run_dir, train_set=toy_set(16, 1), valid_set=toy_set(8, 2), test_set=toy_set(8, 3),
                   checkpoint_info=info, metadata={"model": "audionet", "split": "toy", "seed": 0},
                   device="cpu", batch_size=8, seed=0, progress=False, **kwargs)


def test_two_stages_write_the_run_outputs(tmp_path):
    trainer = make_trainer(tmp_path)
    model = trainer.model
    head = list(model.classifier.parameters())
    for p in model.features.parameters():
        p.requires_grad = False
    trainer.fit("head", [{"params": head, "lr": 1e-2}], epochs=1)
    for p in model.features.parameters():
        p.requires_grad = True
    trainer.fit("all", [{"params": model.features.parameters(), "lr": 1e-3}, {"params": head, "lr": 1e-2}],
                epochs=1, optimizer="adam", schedule="cosine")
    metrics = trainer.finish()

    assert {p.name for p in tmp_path.iterdir()} >= {"best.pt", "last.pt", "metrics.json", "curves.png",
                                                    "confusion.png", "test_probabilities.json"}
    saved = json.loads((tmp_path / "test_probabilities.json").read_text())
    probabilities = torch.tensor(saved["probabilities"])
    assert saved["classes"] == list("abcd") and probabilities.shape == (8, 4)
    assert torch.allclose(probabilities.sum(1), torch.ones(8), atol=1e-3)
    hits = (probabilities.argmax(1) == torch.tensor(saved["targets"])).float().mean().item()
    assert hits == pytest.approx(metrics["test_accuracy"])
    assert [r["stage"] for r in metrics["epochs"]] == ["head", "all"]
    assert len(metrics["epochs"][1]["lr"]) == 2
    assert json.loads((tmp_path / "metrics.json").read_text())["test_accuracy"] == metrics["test_accuracy"]
    assert set(metrics["per_class_accuracy"]) == set("abcd")
    assert metrics["hardware"]["cpu"] and metrics["hardware"]["threads"] == torch.get_num_threads()
    assert metrics["hardware"]["gpu"] is None  # trained on the CPU
    best = torch.load(tmp_path / "best.pt", weights_only=False)
    assert best["epoch"] == metrics["best_epoch"] and best["valid_accuracy"] == metrics["valid_accuracy"]
    assert set(best) >= {"model_name", "model_kwargs", "state_dict", "classes", "input", "epoch", "valid_accuracy"}


def test_precision_auto_follows_the_device(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision("auto", cuda) is torch.float16
    monkeypatch.setattr(engine, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto", cpu) is torch.bfloat16
    monkeypatch.setattr(engine, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto", cpu) is None
    assert resolve_precision("fp32", cuda) is None and resolve_precision("bf16", cpu) is torch.bfloat16
    with pytest.raises(ValueError, match="fp16 needs CUDA"):
        resolve_precision("fp16", cpu)
    with pytest.raises(ValueError, match="--precision"):
        resolve_precision("int8", cpu)


def test_bf16_training_keeps_float32_weights_and_records_the_precision(tmp_path):
    trainer = make_trainer(tmp_path, precision="bf16")
    trainer.fit("train", [{"params": trainer.model.parameters(), "lr": 1e-3}], epochs=1)
    metrics = trainer.finish()
    assert metrics["precision"] == "bfloat16" and trainer.scaler.is_enabled() is False
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in metrics["epochs"])
    state = torch.load(tmp_path / "best.pt", weights_only=False)["state_dict"]
    assert all(v.dtype in (torch.float32, torch.int64) for v in state.values())


def test_without_validation_folds_the_last_epoch_is_kept(tmp_path):
    trainer = make_trainer(tmp_path, mix=Mixup(0.4))
    trainer.valid_set = None
    trainer.fit("train", [{"params": trainer.model.parameters(), "lr": 1e-3}], epochs=2)
    metrics = trainer.finish()
    assert metrics["best_epoch"] == 2 and metrics["valid_accuracy"] is None
    assert "valid_accuracy" not in metrics["epochs"][0]


def test_ema_update_warms_up_then_follows_the_decay(tmp_path):
    trainer = make_trainer(tmp_path, ema=0.5)
    weight = trainer.model.classifier.weight
    average = trainer.ema_model.classifier.weight
    with torch.no_grad():
        weight.fill_(1.0)
        average.zero_()
    trainer._update_ema()  # decay min(0.5, 1/10): the average moves 90 % of the way
    assert torch.allclose(average, torch.full_like(average, 0.9))
    trainer._update_ema()  # min(0.5, 2/11)
    assert torch.allclose(average, torch.full_like(average, 0.9 + (1 - 2 / 11) * 0.1))
    for _ in range(20):
        trainer._update_ema()
    with torch.no_grad():
        weight.fill_(3.0)
    trainer._update_ema()  # warm-up over: decay 0.5
    assert torch.allclose(average, torch.full_like(average, 2.0), atol=1e-5)
    assert trainer.ema_model.features[1].num_batches_tracked == trainer.model.features[1].num_batches_tracked
    assert not any(p.requires_grad for p in trainer.ema_model.parameters())


def test_with_ema_the_average_is_validated_selected_and_saved(tmp_path):
    last_kept = make_trainer(tmp_path / "no-valid", ema=0.9, mix=Mixup(0.4))
    last_kept.valid_set = None  # the last epoch is kept: best.pt must be the average after it
    last_kept.fit("train", [{"params": last_kept.model.parameters(), "lr": 1e-2}], epochs=2)
    assert last_kept.ema_updates == 2 * 2  # 16 clips in batches of 8, two epochs
    saved = torch.load(tmp_path / "no-valid" / "best.pt", weights_only=False)["state_dict"]
    for name, value in last_kept.ema_model.state_dict().items():
        assert torch.equal(saved[name], value), name
    assert not torch.equal(saved["classifier.weight"], last_kept.model.classifier.weight.detach())

    trainer = make_trainer(tmp_path / "valid", ema=0.9, mix=Mixup(0.4))
    trainer.fit("train", [{"params": trainer.model.parameters(), "lr": 1e-2}], epochs=2)
    best = torch.load(tmp_path / "valid" / "best.pt", weights_only=False)
    saved = model_from_checkpoint(best)
    assert best["valid_accuracy"] == trainer.evaluate(trainer.valid_set, model=saved)["accuracy"]
    metrics = trainer.finish()
    assert metrics["ema_decay"] == 0.9 and metrics["valid_accuracy"] == best["valid_accuracy"]
    with pytest.raises(ValueError, match="--ema"):
        make_trainer(tmp_path / "valid", resume=True)  # resuming without the average would drop it
    with pytest.raises(ValueError, match="ema must be"):
        make_trainer(tmp_path / "other", ema=1.0)


@pytest.mark.parametrize("overflow", [True, False])
def test_steps_the_loss_scaler_skips_move_neither_the_schedule_nor_the_average(tmp_path, overflow):
    """float16 loss scaling skips a step whose gradients overflow; the one-cycle schedule and the weight
    average wait for it. The overflow is made by a hook that turns one gradient into inf at both steps."""
    trainer = make_trainer(tmp_path / "run", precision="fp32", ema=0.99)
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16)
    if overflow:
        next(trainer.model.parameters()).register_hook(lambda grad: grad * float("inf"))
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.fit("all", [{"params": trainer.model.parameters(), "lr": 1e-2}], epochs=1)
    steps_taken = 0 if overflow else 2
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert state["scheduler"]["last_epoch"] == steps_taken
    assert trainer.ema_updates == steps_taken
    unchanged = all(torch.equal(p, before[name]) for name, p in trainer.model.named_parameters())
    assert unchanged == overflow
    assert trainer.scaler.get_scale() == 2.0 ** (14 if overflow else 16)  # halved at each skipped step


def test_a_new_run_refuses_a_used_folder_and_resume_needs_last_pt(tmp_path):
    with pytest.raises(FileNotFoundError, match="last.pt"):
        make_trainer(tmp_path / "empty", resume=True)
    trainer = make_trainer(tmp_path / "used")
    trainer.fit("train", [{"params": trainer.model.parameters(), "lr": 1e-3}], epochs=1)
    with pytest.raises(FileExistsError, match="last.pt"):
        make_trainer(tmp_path / "used")


def test_a_resumed_run_keeps_the_commit_it_started_with_and_names_the_one_it_resumed_with(tmp_path, monkeypatch):
    import train.engine

    monkeypatch.setattr(train.engine, "git_commit", lambda: "started")
    trainer = make_trainer(tmp_path)
    trainer.fit("train", [{"params": trainer.model.parameters(), "lr": 1e-3}], epochs=1)
    monkeypatch.setattr(train.engine, "git_commit", lambda: "later")
    resumed = make_trainer(tmp_path, resume=True)
    assert resumed.metadata["commit"] == "started" and resumed.metadata["resumed_with_commit"] == "later"
    monkeypatch.setattr(train.engine, "git_commit", lambda: "started")
    assert "resumed_with_commit" not in make_trainer(tmp_path, resume=True).metadata


def test_lr_finder_suggests_a_rate_writes_a_plot_and_restores_weights(tmp_path):
    trainer = make_trainer(tmp_path)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    found = trainer.find_lr(start_lr=1e-6, end_lr=1.0, steps=12)
    assert found.plot.is_file() and found.plot.stat().st_size > 0
    assert found.suggestion == suggest_lr(found.lrs, found.losses)  # the curve it measured, not a default
    assert found.suggestion in found.lrs or found.suggestion == found.lrs[int(min(range(len(found.losses)),
                                                                                 key=found.losses.__getitem__))] / 10
    assert len(found.lrs) == len(found.losses) and found.lrs == sorted(found.lrs)
    after = trainer.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


class CountingSet(torch.utils.data.Dataset):
    """A dataset that counts its reads: the test fold must be read by finish() alone."""

    def __init__(self, inner):
        self.inner, self.reads = inner, 0

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, index):
        self.reads += 1
        return self.inner[index]


def test_best_pt_is_the_best_validation_epoch_and_the_test_fold_is_read_only_at_the_end(tmp_path):
    trainer = make_trainer(tmp_path)
    test_set = CountingSet(trainer.test_set)
    trainer.test_set = test_set
    history = trainer.fit("train", [{"params": trainer.model.parameters(), "lr": 3e-3}], epochs=6)
    assert test_set.reads == 0
    valid = [row["valid_accuracy"] for row in history]
    best_epoch = history[valid.index(max(valid))]["epoch"]  # the first epoch with the highest accuracy
    best = torch.load(tmp_path / "best.pt", weights_only=False)
    assert (best["epoch"], best["valid_accuracy"]) == (best_epoch, max(valid))
    assert len(set(valid)) > 1  # the curve moved, so the choice was a real one
    model = model_from_checkpoint(best)
    assert trainer.evaluate(trainer.valid_set, model=model)["accuracy"] == max(valid)
    metrics = trainer.finish()
    assert test_set.reads == len(test_set) and metrics["best_epoch"] == best_epoch


def test_image_models_train_in_channels_last_memory_and_their_checkpoints_load_as_usual(tmp_path):
    """2-D convolutions train faster channels-last (oneDNN, tensor cores); the saved weights must not care."""
    torch.manual_seed(0)
    kwargs = {"n_classes": 4, "widths": (4, 8), "in_channels": 2}  # one channel would be both layouts at once
    images = TensorDataset(torch.randn(16, 2, 16, 24), torch.arange(16) % 4)
    info = checkpoint_info("melcnn", kwargs, list("abcd"), {"kind": "toy images"})
    trainer = Trainer(MelCNN(**kwargs), tmp_path, train_set=images, valid_set=images, test_set=images,
                      checkpoint_info=info, metadata={"model": "melcnn", "split": "toy", "seed": 0},
                      device="cpu", batch_size=8, progress=False)
    convs = [m.weight for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous() for w in convs)
    history = trainer.fit("train", [{"params": trainer.model.parameters(), "lr": 3e-3}], epochs=2)
    model = model_from_checkpoint(torch.load(tmp_path / "best.pt", weights_only=False))
    assert next(model.parameters()).is_contiguous()  # a fresh model, as export builds it
    assert trainer.evaluate(images, model=model)["accuracy"] == max(row["valid_accuracy"] for row in history)
    assert all(w.is_contiguous() for w in make_trainer(tmp_path / "wave").model.parameters())  # 1-D: as it was


def test_suggest_lr_picks_the_steepest_descent():
    lrs = [10.0 ** e for e in range(-6, 1)]
    losses = [4.0, 4.0, 3.9, 3.0, 1.5, 1.4, 9.0]
    assert suggest_lr(lrs, losses) == pytest.approx(1e-3)


def test_confusion_matrix_counts_true_by_predicted():
    matrix = confusion_matrix([0, 0, 1, 2], [0, 1, 1, 2], 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]


def test_parse_splits():
    assert [s.name for s in parse_splits("cv")] == ["cv1", "cv2", "cv3", "cv4", "cv5"]
    assert parse_splits("cv3")[0].valid_folds == ()
    with pytest.raises(ValueError, match="--split"):
        parse_splits("fold9")


def test_validation_splits_choose_on_another_fold_and_never_touch_fold_5():
    """valid1..valid3 are the book split with fold K choosing the epoch: a recipe choice checked on another fold."""
    (split,) = parse_splits("valid2")
    assert (split.train_folds, split.valid_folds, split.test_fold) == ((1, 3, 4), (2,), 5)
    for name in ("valid1", "valid3"):
        (other,) = parse_splits(name)
        assert 5 not in other.train_folds + other.valid_folds and len(set(other.train_folds + other.valid_folds)) == 4
    assert protocol_text(split, 150) == ("train on folds 1, 3, 4; the epoch with the best accuracy on fold 2 is kept "
                                         "(of 150); fold 5 is evaluated once, with those weights, at the end")
    with pytest.raises(ValueError, match="valid1..valid3"):
        parse_splits("valid4")


RESUME_SCRIPT = textwrap.dedent('''
    import sys, time
    from pathlib import Path
    import torch
    sys.path[:0] = [{repo!r}, {tests!r}]
    from test_engine import Mixup, make_trainer

    torch.set_num_threads(1)
    run_dir, stall_at, marker, ema = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4])
    trainer = make_trainer(run_dir, mix=Mixup(0.4), ema=ema, resume=(run_dir / "last.pt").exists())
    data, calls = trainer.train_set, [0]

    def stall_mid_epoch(item):
        calls[0] += 1
        if calls[0] == stall_at:  # the parent kills us here, in the middle of an epoch
            marker.write_text("stalled")
            time.sleep(600)
        return item
    class Stalling(torch.utils.data.Dataset):
        def __len__(self):
            return len(data)
        def __getitem__(self, i):
            return stall_mid_epoch(data[i])
    trainer.train_set = Stalling()
    model = trainer.model
    trainer.fit("warmup", [{{"params": model.parameters(), "lr": 1e-3}}], epochs=1)
    trainer.fit("main", [{{"params": model.features.parameters(), "lr": 1e-3}},
                         {{"params": model.classifier.parameters(), "lr": 3e-3}}], epochs=2)
    trainer.finish()
''')


def run_training(tmp_path, run_dir, stall_at=0, ema=0.0):
    script = tmp_path / "resume_run.py"
    script.write_text(RESUME_SCRIPT.format(repo=str(REPO), tests=str(REPO / "tests")))
    marker = tmp_path / f"stalled-{run_dir.name}"
    proc = subprocess.Popen([sys.executable, str(script), str(run_dir), str(stall_at), str(marker), str(ema)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if stall_at:
        while not marker.exists():
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    output = proc.communicate(timeout=300)[0]
    return proc.returncode, output


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_resume_after_kill_9_mid_epoch_matches_an_uninterrupted_run(tmp_path, ema):
    code, output = run_training(tmp_path, tmp_path / "straight", ema=ema)
    assert code == 0, output

    interrupted = tmp_path / "interrupted"
    items_per_epoch = 16
    code, _ = run_training(tmp_path, interrupted, stall_at=2 * items_per_epoch + 10, ema=ema)  # inside epoch 3
    assert code == -signal.SIGKILL
    saved = torch.load(interrupted / "last.pt", weights_only=False)
    assert (saved["stage"], saved["stage_epoch"], len(saved["history"])) == ("main", 1, 2)
    assert not (interrupted / "metrics.json").exists()

    code, output = run_training(tmp_path, interrupted, ema=ema)
    assert code == 0, output
    assert "stage 'warmup' already complete" in output

    straight = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    resumed = json.loads((interrupted / "metrics.json").read_text())
    for a, b in zip(straight["epochs"], resumed["epochs"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["valid_accuracy"] == b["valid_accuracy"]
    assert straight["test_accuracy"] == resumed["test_accuracy"]
    last_a = torch.load(tmp_path / "straight" / "last.pt", weights_only=False)
    last_b = torch.load(interrupted / "last.pt", weights_only=False)
    pairs = [(last_a["model"], last_b["model"])]
    if ema:
        assert last_a["ema"]["updates"] == last_b["ema"]["updates"] == 3 * 2
        pairs.append((last_a["ema"]["state_dict"], last_b["ema"]["state_dict"]))
    for weights_a, weights_b in pairs:
        for name in weights_a:
            assert torch.allclose(weights_a[name].float(), weights_b[name].float(), atol=1e-5), name


class FixedTeacher(torch.nn.Module):
    """Answers ``logits`` whatever it sees, and keeps what it was shown."""

    def __init__(self, logits):
        super().__init__()
        self.logits, self.seen = torch.tensor(logits), []

    def forward(self, x):
        self.seen.append(x.clone())
        return self.logits.expand(len(x), -1)


def test_a_teacher_sees_the_second_view_and_shares_the_target_by_its_weight(tmp_path):
    torch.manual_seed(0)
    student_view, teacher_view = torch.randn(8, 1, 6), torch.randn(8, 1, 6) + 100
    labels = torch.arange(8) % 4
    train_set = TensorDataset(torch.cat([student_view, teacher_view], dim=1), labels)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 4))
    teacher = FixedTeacher([2.0, 0.0, 0.0, -1.0])
    info = checkpoint_info("toy", {}, list("abcd"), {"kind": "toy"})
    trainer = Trainer(model, tmp_path, train_set=train_set, valid_set=None, test_set=train_set, checkpoint_info=info,
                      metadata={}, device="cpu", batch_size=8, teacher=teacher, teacher_weight=0.25, progress=False,
                      precision="fp32")  # the expected loss is computed in float32; a bf16 host would autocast
    with torch.no_grad():
        target = 0.75 * torch.nn.functional.one_hot(labels, 4) + 0.25 * teacher.logits.softmax(0)
        expected = torch.nn.functional.cross_entropy(model(student_view), target).item()
    history = trainer.fit("train", [{"params": model.parameters(), "lr": 0.0}], epochs=1, schedule="constant")

    (seen,) = teacher.seen
    assert seen.shape == (8, 1, 6) and seen.min() > 50  # the teacher's view, never the student's
    assert history[0]["train_loss"] == pytest.approx(expected, rel=1e-5)
    # the labels alone score the training accuracy: the untrained student against them, not the teacher
    with torch.no_grad():
        assert history[0]["train_accuracy"] == (model(student_view).argmax(1) == labels).float().mean().item()


def test_soft_targets_of_a_training_set_are_the_loss_target_and_are_mixed_as_labels_are(tmp_path):
    torch.manual_seed(0)
    clips = torch.randn(8, 1, 6)
    soft = torch.tensor([0.7, 0.1, 0.1, 0.1]).roll(1).expand(8, -1).clone()  # every clip: class 1 at 0.7
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 4))
    info = checkpoint_info("toy", {}, list("abcd"), {"kind": "toy"})
    trainer = Trainer(model, tmp_path, train_set=TensorDataset(clips, soft), valid_set=None,
                      test_set=TensorDataset(clips, torch.ones(8, dtype=torch.long)), checkpoint_info=info,
                      metadata={}, device="cpu", batch_size=8, progress=False, precision="fp32")
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(model(clips), soft).item()
        credit = soft.gather(1, model(clips).argmax(1, keepdim=True)).mean().item()
    history = trainer.fit("train", [{"params": model.parameters(), "lr": 0.0}], epochs=1, schedule="constant")
    assert history[0]["train_loss"] == pytest.approx(expected, rel=1e-5)
    assert history[0]["train_accuracy"] == pytest.approx(credit)  # partial credit, as for mixed labels


def test_consistency_adds_the_weighted_jensen_shannon_of_the_two_views_to_the_loss(tmp_path):
    torch.manual_seed(0)
    recorded, clean = torch.randn(8, 1, 6), torch.randn(8, 1, 6)
    labels = torch.arange(8) % 4
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 4))
    info = checkpoint_info("toy", {}, list("abcd"), {"kind": "toy"})

    def first_epoch_loss(run_dir, clean_view, weight):
        train_set = TensorDataset(torch.cat([recorded, clean_view], dim=1), labels)
        trainer = Trainer(model, run_dir, train_set=train_set, valid_set=None, test_set=train_set,
                          checkpoint_info=info, metadata={}, device="cpu", batch_size=8, consistency=weight,
                          progress=False, precision="fp32")
        return trainer.fit("train", [{"params": model.parameters(), "lr": 0.0}], epochs=1,
                           schedule="constant")[0]["train_loss"]

    with torch.no_grad():
        p, q = model(recorded).softmax(1), model(clean).softmax(1)
        m = (p + q) / 2
        divergence = ((p * (p / m).log()).sum(1) + (q * (q / m).log()).sum(1)).mean().item() / 2
        label_loss = torch.nn.functional.cross_entropy(model(recorded), labels).item()
    assert 0 < divergence < math.log(2)
    assert first_epoch_loss(tmp_path / "a", clean, 3.0) == pytest.approx(label_loss + 3.0 * divergence, rel=1e-5)
    # the same clip recorded cleanly: nothing to add, and the labels alone are learnt from the recorded view
    assert first_epoch_loss(tmp_path / "b", recorded, 3.0) == pytest.approx(label_loss, rel=1e-5)
    assert jensen_shannon(torch.tensor([[50.0, 0.0]]), torch.tensor([[0.0, 50.0]])).item() == pytest.approx(math.log(2))


def test_consistency_needs_two_views_and_a_weight_of_at_least_0(tmp_path):
    with pytest.raises(ValueError, match="consistency"):
        make_trainer(tmp_path / "a", consistency=-1.0)
    trainer = make_trainer(tmp_path / "b", consistency=1.0)  # one-channel clips: no clean view
    with pytest.raises(ValueError, match="two views"):
        trainer.fit("train", [{"params": trainer.model.parameters(), "lr": 1e-3}], epochs=1)


def test_a_teacher_needs_two_views_and_a_weight_in_0_1(tmp_path):
    with pytest.raises(ValueError, match="teacher_weight"):
        make_trainer(tmp_path / "a", teacher=FixedTeacher([0.0] * 4), teacher_weight=1.5)
    trainer = make_trainer(tmp_path / "b", teacher=FixedTeacher([0.0] * 4))  # one-channel clips: no second view
    with pytest.raises(ValueError, match="two views"):
        trainer.fit("train", [{"params": trainer.model.parameters(), "lr": 1e-3}], epochs=1)
