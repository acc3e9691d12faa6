"""benchmarks/training_speed.py: its synthetic ESC-50 and the JSON it writes from a real (tiny) run."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import training_speed  # noqa: E402

from train.data.esc50 import read_clips  # noqa: E402


def test_synthetic_esc50_has_the_layout_and_fold_sizes(tmp_path):
    clips = read_clips(training_speed.synthetic_esc50(tmp_path / "ESC-50", classes=3, per_fold=2, seconds=0.5))
    assert len(clips) == 3 * 2 * 5 and all(c.path.is_file() for c in clips)
    assert {c.fold: sum(d.fold == c.fold for d in clips) for c in clips} == {f: 6 for f in range(1, 6)}
    assert sorted({c.target for c in clips}) == [0, 1, 2]


@pytest.mark.slow
def test_training_speed_reports_each_stage(tmp_path):
    out = tmp_path / "speed.json"
    assert training_speed.main(["resnet", "--classes", "2", "--per-fold", "1", "--device", "cpu", "--workers", "0",
                                "--out", str(out), "--", "--head-epochs", "1", "--epochs", "2", "--batch-size", "4"]) == 0
    result = json.loads(out.read_text())
    assert result["model"] == "resnet50" and result["clips_per_epoch"] == 2 * 4  # folds 1-3 train, 4 validates
    assert [(s["stage"], s["epochs"]) for s in result["stages"]] == [("head", 1), ("all", 2)]
    assert all(s["clips_per_s"] > 0 for s in result["stages"]) and result["wall_time_s"] > 0
    assert "--weights" in result["recipe_args"] and result["test_accuracy"] is None


def test_model_cost_counts_parameters_and_multiply_accumulates():
    from torch import nn

    from benchmarks.model_cost import cost

    conv = nn.Conv1d(1, 4, kernel_size=3, bias=False)  # 4 filters x 3 taps at each of 98 output positions
    assert cost(conv, (1, 100)) == {"parameters": 12, "macs_per_window": 4 * 3 * 98, "input_shape": [1, 100]}
