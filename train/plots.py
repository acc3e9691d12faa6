"""Training plots (matplotlib, Agg backend): the LR range test, loss and accuracy curves, the confusion matrix."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.atomic import staged


def save_figure_atomic(fig, path: Path) -> None:
    """Write a figure to a temporary file, then rename it over ``path``; closes the figure."""
    import matplotlib.pyplot as plt

    path = Path(path)
    with staged(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip("."), dpi=120, bbox_inches="tight")
    plt.close(fig)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_lr_find(lrs, losses, suggestion: float, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(lrs, losses)
    ax.axvline(suggestion, color="tab:red", linestyle="--", label=f"suggested {suggestion:.1e}")
    ax.set(xscale="log", xlabel="learning rate", ylabel="smoothed training loss", title="LR range test")
    ax.legend()
    save_figure_atomic(fig, path)


def plot_curves(history: list, path: Path, title: str = "") -> None:
    plt = _pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    epochs = [r["epoch"] for r in history]
    for key, label in (("train", "train"), ("valid", "valid")):
        if any(f"{key}_loss" in r for r in history):
            ax_loss.plot(epochs, [r.get(f"{key}_loss") for r in history], label=label)
            ax_acc.plot(epochs, [r.get(f"{key}_accuracy") for r in history], label=label)
    for i in range(1, len(history)):
        if history[i]["stage"] != history[i - 1]["stage"]:
            for ax in (ax_loss, ax_acc):
                ax.axvline(history[i]["epoch"] - 0.5, color="grey", linestyle=":")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1))
    for ax in (ax_loss, ax_acc):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    save_figure_atomic(fig, path)


def plot_confusion(matrix: np.ndarray, classes: list, path: Path, title: str = "") -> None:
    plt = _pyplot()
    n = len(classes)
    fig, ax = plt.subplots(figsize=(0.22 * n + 3, 0.22 * n + 2.5))
    image = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), classes, rotation=90, fontsize=6)
    ax.set_yticks(range(n), classes, fontsize=6)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.colorbar(image, ax=ax, fraction=0.03)
    save_figure_atomic(fig, path)
