"""ResNet-50 transfer: staging, SpecAugment masks, weight loading, and a tiny end-to-end run."""
from __future__ import annotations

import sys
import urllib.error
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision import transforms
from torchvision.models import resnet18, resnet50

from train.models import model_from_checkpoint
from train.resnet import SpecResNet50, WeightsError
from train.specaugment import FrequencyMask, TimeMask, spec_augment


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SpecResNet50(n_classes=50, weights=None)


def trainable(model):
    return {name for name, p in model.named_parameters() if p.requires_grad}


# --- staging -----------------------------------------------------------------------------------

def test_stage1_trains_only_the_head(model):
    model.freeze_backbone(True)
    head = {f"head.{name}" for name, _ in model.head.named_parameters()}
    assert head == {"head.0.weight", "head.0.bias", "head.3.weight", "head.3.bias"}
    assert trainable(model) == head


def test_stage1_keeps_backbone_batchnorm_in_eval_mode(model):
    model.freeze_backbone(True).train()
    norms = [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms)
    assert model.head.training  # dropout stays active
    before = norms[0].running_mean.clone()
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32) * 5 + 3)
    assert torch.equal(norms[0].running_mean, before)


def test_stage2_unfreezes_everything_and_batchnorm_trains_again(model):
    model.freeze_backbone(False).train()
    assert trainable(model) == {name for name, _ in model.named_parameters()}
    assert all(m.training for m in model.modules())


def test_stage2_param_groups_cover_every_parameter_once_with_ordered_lrs(model):
    groups = model.param_groups(lr_head=1e-2, lr_late=1e-4, lr_early=1e-8)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    by_name = {g["name"]: g for g in groups}
    assert by_name["head"]["lr"] > by_name["layer3-4"]["lr"] > by_name["stem-layer2"]["lr"]
    layer4 = {id(p) for p in model.backbone.layer4.parameters()}
    stem = {id(p) for p in model.backbone.conv1.parameters()}
    assert layer4 <= {id(p) for p in by_name["layer3-4"]["params"]}
    assert stem <= {id(p) for p in by_name["stem-layer2"]["params"]}
    optimizer = torch.optim.Adam(groups)  # what the book's lr=[...] meant
    assert [g["lr"] for g in optimizer.param_groups] == [1e-2, 1e-4, 1e-8]


# --- SpecAugment ---------------------------------------------------------------------------------

def masked_bands(before, after):
    """Indices of the mel rows and of the frame columns that were blanked entirely (all channels)."""
    changed = (before - after).abs() > 1e-5
    return changed.all(dim=(0, 2)).nonzero().flatten(), changed.all(dim=(0, 1)).nonzero().flatten()


@pytest.mark.parametrize("mask_type, axis", [(FrequencyMask, "freq"), (TimeMask, "time")])
def test_masks_blank_one_band_on_their_own_axis_within_bounds(mask_type, axis):
    torch.manual_seed(0)
    # Few mel rows, many frames: the book drew each start from the other axis.
    image = torch.rand(3, 12, 90) + 1.0
    max_width = 8
    widths = set()
    for _ in range(300):
        out = mask_type(max_width, use_mean=False)(image)
        rows, cols = masked_bands(image, out)
        band, other = (rows, cols) if axis == "freq" else (cols, rows)
        assert other.numel() == 0 and torch.equal(out != image, (out == 0))  # nothing else touched
        if band.numel() == 0:
            widths.add(0)
            continue
        size = image.shape[1] if axis == "freq" else image.shape[2]
        assert band.max() < size and torch.equal(band, torch.arange(band.min(), band.max() + 1))
        widths.add(band.numel())
    assert widths <= set(range(max_width)) and max(widths) == max_width - 1


def test_zero_fill_and_mean_fill():
    torch.manual_seed(1)
    image = torch.rand(3, 20, 30) * torch.tensor([1.0, 2.0, 3.0])[:, None, None] + 1.0
    zero = FrequencyMask(10, use_mean=False)
    while (band := masked_bands(image, out := zero(image))[0]).numel() == 0:
        pass
    assert torch.all(out[:, band, :] == 0)
    mean = TimeMask(10, use_mean=True)
    while (band := masked_bands(image, out := mean(image))[1]).numel() == 0:
        pass
    channel_means = image.mean(dim=(1, 2))
    assert torch.allclose(out[:, :, band], channel_means[:, None, None].expand(3, 20, band.numel()))
    assert torch.allclose(out[:, :, band.max() + 1:], image[:, :, band.max() + 1:])
    assert not torch.equal(out, image) and image.min() >= 1.0  # the input is left untouched


def test_spec_augment_applies_each_mask_with_probability_half():
    augment = spec_augment(freq_width=6, time_width=9)
    applied = [t for t in augment.transforms if isinstance(t, transforms.RandomApply)]
    assert [t.p for t in applied] == [0.5, 0.5]
    assert [type(t.transforms[0]) for t in applied] == [FrequencyMask, TimeMask]
    torch.manual_seed(2)
    image = torch.rand(3, 16, 24) + 1.0
    hits = [tuple(b.numel() > 0 for b in masked_bands(image, augment(image))) for _ in range(1000)]
    freq_rate = sum(f for f, _ in hits) / len(hits)
    time_rate = sum(t for _, t in hits) / len(hits)
    # P(masked) = 0.5 * P(width > 0) = 0.5 * (1 - 1/max_width)
    assert abs(freq_rate - 0.5 * 5 / 6) < 0.06 and abs(time_rate - 0.5 * 8 / 9) < 0.06


def test_mask_repr_and_arguments():
    assert repr(FrequencyMask(10, use_mean=False)) == "FrequencyMask(max_width=10, use_mean=False)"
    assert repr(TimeMask(7)) == "TimeMask(max_width=7, use_mean=True)"
    with pytest.raises(ValueError, match="max_width"):
        TimeMask(0)


# --- weights -------------------------------------------------------------------------------------

def test_weights_from_a_state_dict_file(tmp_path):
    torch.manual_seed(3)
    reference = resnet50(weights=None)
    path = tmp_path / "resnet50.pth"
    torch.save(reference.state_dict(), path)
    loaded = SpecResNet50(weights=str(path))
    for name, tensor in loaded.backbone.state_dict().items():
        assert torch.equal(tensor, reference.state_dict()[name]), name


def test_missing_or_mismatched_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(WeightsError, match="no such file"):
        SpecResNet50(weights=str(tmp_path / "absent.pth"))
    path = tmp_path / "resnet18.pth"
    torch.save(resnet18(weights=None).state_dict(), path)
    with pytest.raises(WeightsError, match="resnet18.pth: not a ResNet-50 state dict"):
        SpecResNet50(weights=str(path))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="garbage.pth"):
        SpecResNet50(weights=str(garbage))


def test_imagenet_weights_offline_suggest_alternatives(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", offline)
    with pytest.raises(WeightsError, match="--weights PATH.*--weights none"):
        SpecResNet50(weights="imagenet")


def test_a_checkpoint_rebuilds_its_model_without_fetching_pretrained_weights(monkeypatch):
    def offline(*args, **kwargs):
        raise AssertionError("the checkpoint's own weights replace the pretrained ones: nothing to fetch")

    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", offline)
    trained = SpecResNet50(n_classes=3, weights=None)
    checkpoint = {"model_name": "resnet50", "model_kwargs": {"n_classes": 3, "weights": "imagenet"},
                  "state_dict": trained.state_dict()}
    model = model_from_checkpoint(checkpoint)
    assert not model.training
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), trained.state_dict().values()))
    with pytest.raises(ValueError, match="unknown model name 'vgg'"):
        model_from_checkpoint({**checkpoint, "model_name": "vgg"})


# --- end to end on synthetic clips -------------------------------------------------------------------

def resnet_cli(fake_esc50, tmp_path, *extra):
    from train.resnet import main

    args = ["--data", str(fake_esc50), "--out", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"),
            "--weights", "none", "--head-epochs", "1", "--epochs", "1", "--batch-size", "4", "--no-progress",
            "--device", "cpu", *extra]
    assert main(args) == 0
    return tmp_path / "runs"


def test_staged_run_writes_metrics_and_a_loadable_checkpoint(fake_esc50, tmp_path, monkeypatch):
    import json

    monkeypatch.setattr(sys, "argv", ["resnet.py", "--epochs", "1"])  # what train.runs records as the command
    runs = resnet_cli(fake_esc50, tmp_path)
    (run,) = runs.iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert [e["stage"] for e in metrics["epochs"]] == ["head", "all"]
    assert metrics["test_clips"] == 2 and 0.0 <= metrics["test_accuracy"] <= 1.0
    assert metrics["settings"]["weights"] is None and metrics["settings"]["specaugment"] is True
    assert metrics["command"] == "python -m train.resnet --epochs 1" and metrics["model"] == "resnet50"
    assert "resumed_with_command" not in metrics
    assert metrics["protocol"].startswith("train on folds 1, 2, 3; the epoch with the best accuracy on fold 4 is "
                                          "kept (of 2)")  # both stages' epochs
    for name in ("best.pt", "last.pt", "curves.png", "confusion.png", "results.md", "results.json"):
        assert (run / name).is_file(), name
    best = torch.load(run / "best.pt", weights_only=False)
    assert best["input"]["kind"] == "log_mel_image" and best["model_kwargs"]["weights"] is None
    assert isinstance(model_from_checkpoint(best), SpecResNet50)
    from train.resnet import main

    monkeypatch.setattr(sys, "argv", ["resnet.py", "--resume", "RUN"])
    assert main(["--resume", str(run), "--data", str(fake_esc50), "--cache-dir", str(tmp_path / "cache"),
                 "--no-progress", "--device", "cpu"]) == 0  # a finished run: nothing left to train
    resumed = json.loads((run / "metrics.json").read_text())
    assert resumed["test_accuracy"] == metrics["test_accuracy"] and resumed["command"] == metrics["command"]
    assert resumed["resumed_with_command"] == "python -m train.resnet --resume RUN"


def test_staged_run_with_ema_keeps_the_average_through_both_stages(fake_esc50, tmp_path):
    import json

    runs = resnet_cli(fake_esc50, tmp_path, "--ema", "0.5")
    (run,) = runs.iterdir()
    assert json.loads((run / "metrics.json").read_text())["ema_decay"] == 0.5
    last = torch.load(run / "last.pt", weights_only=False)
    assert last["completed_stages"] == ["head", "all"] and last["ema"]["updates"] > 0
    assert set(last["ema"]["state_dict"]) == set(last["model"])
    best = torch.load(run / "best.pt", weights_only=False)
    assert isinstance(model_from_checkpoint(best), SpecResNet50)


def test_ablation_table_has_the_three_variants(fake_esc50, tmp_path):
    import json

    runs = resnet_cli(fake_esc50, tmp_path, "--ablation")
    (results_dir,) = runs.iterdir()
    results = json.loads((results_dir / "results.json").read_text())
    assert [r["variant"] for r in results["runs"]] == ["head-only", "staged", "staged+specaugment"]
    assert [s["variant"] for s in results["summary"]] == ["head-only", "staged", "staged+specaugment"]
    assert all(s["test_accuracy"]["mean"] == r["test_accuracy"] for s, r in zip(results["summary"], results["runs"]))
    assert "| staged+specaugment |" in (results_dir / "results.md").read_text()


def test_ensemble_cli_averages_finished_runs(fake_esc50, tmp_path, capsys):
    import json

    from train.audionet import main as audionet_main
    from train.ensemble import main as ensemble_main

    runs = tmp_path / "runs"
    assert audionet_main(["--data", str(fake_esc50), "--out", str(runs), "--epochs", "1", "--depth", "5",
                          "--seeds", "0,1", "--batch-size", "4", "--no-progress", "--device", "cpu"]) == 0
    run_dirs = sorted(str(p) for p in runs.iterdir() if p.is_dir())
    assert len(run_dirs) == 2
    assert ensemble_main([*run_dirs, "--data", str(fake_esc50), "--out", str(tmp_path / "ens.json")]) == 0
    result = json.loads((tmp_path / "ens.json").read_text())
    assert set(result["runs"]) == set(run_dirs) and result["test_clips"] == 2
    assert 0.0 <= result["ensemble"] <= 1.0 and result["fold"] == 5
    # the book split's selection fold can be scored too, but never a fold the runs trained on
    assert ensemble_main([*run_dirs, "--data", str(fake_esc50), "--fold", "4", "--out", str(tmp_path / "f4.json")]) == 0
    assert json.loads((tmp_path / "f4.json").read_text())["fold"] == 4
    assert ensemble_main([*run_dirs, "--data", str(fake_esc50), "--fold", "3"]) == 2
    assert "trained on folds 1, 2, 3; score it on the others" in capsys.readouterr().err
    assert ensemble_main([run_dirs[0], str(tmp_path / "nothing")]) == 2
    assert "no metrics.json" in capsys.readouterr().err
    # a results folder keeps no weights: its saved test-fold probabilities give the same ensemble
    for run in run_dirs:
        (Path(run) / "best.pt").unlink()
    assert ensemble_main([*run_dirs, "--data", str(tmp_path / "no-data"), "--out", str(tmp_path / "saved.json")]) == 0
    assert json.loads((tmp_path / "saved.json").read_text()) == result
    assert ensemble_main([*run_dirs, "--data", str(fake_esc50), "--fold", "4"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
