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
    assert "its classes or window length differ" in capsys.readouterr().err


@pytest.mark.parametrize("folds", ["0", "4,x", ""])
def test_bad_folds_exit_with_usage(folds, tone_models, capsys):
    with pytest.raises(SystemExit):
        evaluate.main([str(tone_models["image"]), "--data", "x", "--folds", folds])
    assert "--folds" in capsys.readouterr().err


def test_every_ensemble_of_a_size_is_scored(tone_models, fake_esc50, monkeypatch):
    """Three models, two clips (targets low, high): each pair and the trio, from hand-computed averages."""
    a = np.array([[0.9, 0.1, 0.0], [0.6, 0.4, 0.0]])  # right, wrong
    b = np.array([[0.2, 0.8, 0.0], [0.1, 0.9, 0.0]])  # wrong, right
    c = np.array([[0.3, 0.7, 0.0], [0.7, 0.3, 0.0]])  # wrong, wrong
    monkeypatch.setattr(evaluate, "probabilities", lambda classifiers, clips: np.stack([a, b, c]))
    paths = [tone_models["image"], tone_models["waveform"], tone_models["image"]]
    fold = evaluate.evaluate(paths, fake_esc50, [3], sizes=(2, 3))["folds"]["3"]
    names = [str(p) for p in paths]
    pairs = fold["combinations"]["2"]
    # a+b: (0.55, 0.45) right, (0.35, 0.65) right; a+c: (0.6, 0.4) right, (0.65, 0.35) wrong;
    # b+c: (0.25, 0.75) wrong, (0.4, 0.6) right
    assert pairs["ensembles"] == {f"{names[0]}+{names[1]}": 1.0, f"{names[0]}+{names[2]}": 0.5,
                                  f"{names[1]}+{names[2]}": 0.5}
    assert pairs["mean"] == pytest.approx(2 / 3) and pairs["std"] == pytest.approx(np.std([1, 0.5, 0.5], ddof=1))
    # the trio: (0.47, 0.53) wrong, (0.47, 0.53) right; the same as "ensemble", the average of all three
    assert fold["combinations"]["3"] == {"ensembles": {"+".join(names): 0.5}, "mean": 0.5, "std": None}
    assert fold["ensemble"] == 0.5


@pytest.mark.parametrize("sizes", ["1", "2,x", "3"])
def test_bad_combination_sizes_exit_with_usage(sizes, tone_models, capsys):
    with pytest.raises(SystemExit):
        evaluate.main([str(tone_models["image"]), str(tone_models["waveform"]), "--data", "x",
                       "--combinations", sizes])
    assert "--combinations" in capsys.readouterr().err
