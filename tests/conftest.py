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
    from edge_models import HIGH_HZ, LOW_HZ, write_clip

    root = tmp_path_factory.mktemp("ESC-50")
    (root / "audio").mkdir()
    (root / "meta").mkdir()
    rows = ["filename,fold,target,category,esc10,src_file,take"]
    for fold in range(1, 6):
        for target, (category, freq) in enumerate((("low_tone", LOW_HZ), ("high_tone", HIGH_HZ))):
            name = f"{fold}-{100 + target}-A-{target}.wav"
            write_clip(root / "audio" / name, freq * (1 + 0.05 * fold))
            rows.append(f"{name},{fold},{target},{category},False,{100 + target},A")
    (root / "meta" / "esc50.csv").write_text("\n".join(rows) + "\n")
    return root
