"""Model registry: rebuilds a model from the name and arguments stored in a checkpoint."""


def build_model(name: str, **kwargs):
    """``audionet`` -> train.audionet.AudioNet, ``melcnn`` -> train.melcnn.MelCNN, ``resnet50`` ->
    train.resnet.SpecResNet50."""
    if name == "audionet":
        from train.audionet import AudioNet

        return AudioNet(**kwargs)
    if name == "melcnn":
        from train.melcnn import MelCNN

        return MelCNN(**kwargs)
    if name == "resnet50":
        from train.resnet import SpecResNet50

        return SpecResNet50(**kwargs)
    raise ValueError(f"unknown model name {name!r} (expected 'audionet', 'melcnn' or 'resnet50')")


def model_from_checkpoint(checkpoint: dict):
    """The trained network a checkpoint (``best.pt``) describes, in eval mode.

    Pretrained weights are never fetched for it (ResNet-50's ``weights=None``): the checkpoint's own
    weights replace them.
    """
    kwargs = dict(checkpoint["model_kwargs"])
    if checkpoint["model_name"] == "resnet50":
        kwargs["weights"] = None
    model = build_model(checkpoint["model_name"], **kwargs)
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()
