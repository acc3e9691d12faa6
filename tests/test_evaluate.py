"""export.evaluate: accuracy of exported models alone and averaged, through the edge's classifier."""
import json

import numpy as np
import pytest

import export.evaluate as evaluate
from edge_models import waveform_model


def test_each_model_and_their_average_are_scored_per_fold(tone_models, fake_esc50, tmp_path):
    out = tmp_path / "ensemble.json"
    code = evaluate.main([str(tone_models["image"]), str(tone_models["waveform"]), "--data", str(fake_esc50),
                          "--folds", "1,2", "--out", str(out)])
    result = json.loads(out.read_text())
    assert code == 0 and set(result["folds"]) == {"1", "2"}
    for fold in result["folds"].values():
        assert fold["clips"] == 2
        assert fold["accuracy"] == {str(tone_models["image"]): 1.0, str(tone_models["waveform"]): 1.0}
        assert fold["ensemble"] == 1.0


def test_the_ensemble_is_the_mean_of_the_probabilities(tone_models, fake_esc50, monkeypatch):
    """Each model is right on one clip (targets low, high) and the more confident one wins each vote: the
    average is right on both, which neither a vote for the first model nor the second would be."""
    first = np.array([[0.9, 0.1, 0.0], [0.55, 0.45, 0.0]])
    second = np.array([[0.3, 0.6, 0.1], [0.1, 0.9, 0.0]])
    monkeypatch.setattr(evaluate, "probabilities", lambda classifiers, clips: np.stack([first, second]))
    result = evaluate.evaluate([tone_models["image"], tone_models["waveform"]], fake_esc50, [3])
    fold = result["folds"]["3"]
    assert list(fold["accuracy"].values()) == [0.5, 0.5] and fold["ensemble"] == 1.0


def test_models_with_different_classes_are_refused(tone_models, fake_esc50, tmp_path, capsys):
    other = waveform_model(tmp_path / "other.onnx")
    import onnx

    proto = onnx.load(str(other))
    for prop in proto.metadata_props:
        if prop.key == "classes":
            prop.value = json.dumps(["a", "b", "c"])
    onnx.save(proto, str(other))
    assert evaluate.main([str(tone_models["image"]), str(other), "--data", str(fake_esc50)]) == 2
    assert "name different classes" in capsys.readouterr().err


@pytest.mark.parametrize("folds", ["0", "4,x", ""])
def test_bad_folds_exit_with_usage(folds, tone_models, capsys):
    with pytest.raises(SystemExit):
        evaluate.main([str(tone_models["image"]), "--data", "x", "--folds", folds])
    assert "--folds" in capsys.readouterr().err
