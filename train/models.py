"""Model registry: rebuilds a model from the name and arguments stored in a checkpoint."""


def build_model(name: str, **kwargs):
    """``audionet`` -> train.audionet.AudioNet, ``resnet50`` -> train.resnet.SpecResNet50."""
    if name == "audionet":
        from train.audionet import AudioNet

        return AudioNet(**kwargs)
    if name == "resnet50":
        from train.resnet import SpecResNet50

        return SpecResNet50(**kwargs)
    raise ValueError(f"unknown model name {name!r} (expected 'audionet' or 'resnet50')")
