import pytest


@pytest.fixture(scope="session")
def tone_models(tmp_path_factory):
    """Tiny ONNX models (tests/edge_models.py) telling a 300 Hz from a 3 kHz tone: {"image": path, "waveform": path}."""
    from edge_models import image_model, waveform_model

    folder = tmp_path_factory.mktemp("tone_models")
    return {"image": image_model(folder / "image.onnx"), "waveform": waveform_model(folder / "waveform.onnx")}


@pytest.fixture(scope="session")
def fake_esc50(tmp_path_factory):
    """A tiny ESC-50 layout: one 5-s 44.1 kHz tone clip per class (low_tone 0, high_tone 1) and fold (10 WAVs)."""
    from edge_models import HIGH_HZ, LOW_HZ, tone
    from train.data.esc50 import write_dataset

    classes = (("low_tone", LOW_HZ), ("high_tone", HIGH_HZ))
    return write_dataset(tmp_path_factory.mktemp("ESC-50"),
                         ((fold, target, category, tone(freq * (1 + 0.05 * fold), 5.0, 44100))
                          for fold in range(1, 6) for target, (category, freq) in enumerate(classes)), 44100)
