"""Per-epoch figures: learning curves, validation ROC and confusion matrix, attention over slices.

Each function draws one figure to a PNG path and closes it. Matplotlib runs headless (Agg).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay, confusion_matrix  # noqa: E402

from gliomil.runtime.files import write_with  # noqa: E402
from gliomil.vocabulary import GRADES  # noqa: E402


def _save(fig, path: Path) -> None:
    """Write the figure as PNG atomically (:func:`gliomil.runtime.files.write_with`) and close it."""
    try:
        write_with(path, lambda f: fig.savefig(f, format="png", dpi=80))
    finally:
        plt.close(fig)


def plot_learning_curves(history: list[dict], path: Path) -> None:
    """Training and validation loss and AUC against epoch, from the logged history."""
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, key in zip(axes, ("loss", "auc")):
        for split in ("train", "val"):
            ax.plot(epochs, [h[f"{split}/{key}"] for h in history], marker=".", label=split)
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend()
    fig.tight_layout()
    _save(fig, path)


def plot_roc(labels: np.ndarray, probabilities: np.ndarray, path: Path, title: str) -> None:
    """ROC curve of HGG (positive) against LGG."""
    plot_rocs({"DSMIL": (labels, probabilities)}, path, title)


def plot_rocs(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str) -> None:
    """ROC curves overlaid, one per ``name -> (labels, probabilities)``."""
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    for name, (labels, probabilities) in curves.items():
        if len(np.unique(labels)) == 2:
            RocCurveDisplay.from_predictions(labels, probabilities, ax=ax, name=name)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    ax.set_title(title)
    fig.tight_layout()
    _save(fig, path)


def plot_confusion(labels: np.ndarray, predicted: np.ndarray, path: Path, title: str) -> None:
    """Confusion matrix with LGG/HGG axes (rows: true grade)."""
    matrix = confusion_matrix(labels, predicted, labels=[0, 1])
    fig, ax = plt.subplots(figsize=(3.6, 3.4))
    ConfusionMatrixDisplay(matrix, display_labels=GRADES).plot(ax=ax, colorbar=False)
    ax.set_title(title)
    fig.tight_layout()
    _save(fig, path)


def figures_per_epoch(has_attention: bool) -> int:
    """Figures a training fold draws per plotted epoch (:class:`gliomil.training.reporting.EpochReporter`):
    learning curves, ROC, confusion, and the attention figure when the aggregator has attention."""
    return 4 if has_attention else 3


def plot_attention(examples: list[dict], path: Path, title: str) -> None:
    """Attention over each example bag's slices, tumour slices shaded.

    Each example: ``subject_id``, ``grade``, ``probability``, ``attention`` (N,), ``tumour_fraction`` (N,),
    ``critical`` (index, or None for an aggregator without a critical slice).
    """
    fig, axes = plt.subplots(len(examples), 1, figsize=(7, 1.8 * len(examples)), squeeze=False)
    for ax, ex in zip(axes[:, 0], examples):
        index = np.arange(len(ex["attention"]))
        tumour = np.asarray(ex["tumour_fraction"]) > 0
        ax.bar(
            index[tumour],
            np.ones(tumour.sum()) * ex["attention"].max() * 1.1,
            width=1.0,
            color="#f4c7c3",
            label="tumour slice",
        )
        ax.bar(index, ex["attention"], width=0.8, color="#3b6ea5", label="attention")
        if ex["critical"] is not None:  # gated attention has no critical slice
            ax.axvline(ex["critical"], color="black", linestyle="--", linewidth=1, label="critical slice")
        ax.axhline(1 / len(index), color="grey", linestyle=":", linewidth=1, label="uniform 1/N")
        ax.set_ylabel("weight")
        ax.set_title(f"{ex['subject_id']} ({ex['grade']}), P(HGG) = {ex['probability']:.2f}", fontsize=9)
    axes[0, 0].legend(fontsize=7, loc="upper right", ncol=4)
    axes[-1, 0].set_xlabel("slice (inferior to superior)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def plot_attention_montage(
    slices: np.ndarray,
    attention: np.ndarray,
    instance_probability: np.ndarray,
    slice_numbers: np.ndarray,
    attended: list[int],
    critical: int,
    tumour: np.ndarray | None,
    path: Path,
    title: str,
) -> None:
    """The ``attended`` slices of one bag (and the ``critical`` one when it is not among them): FLAIR above T1ce,
    each titled with its slice number, attention and instance score; below, attention and instance score over
    every slice.

    slices: (S, 4, H, W) in MODALITIES order, stored (x, y) in RAS, drawn in radiological view (patient's right on
    the left). attention, instance_probability: (S,). slice_numbers: (S,) what to call each slice (the input
    volume's axial index). attended, critical: bag indices. tumour: (S, H, W) in [0, 1] or None; its 0.5 outline
    is drawn.
    """
    top = len(attended)
    chosen = [*attended, critical] if critical not in attended else list(attended)
    fig = plt.figure(figsize=(2.7 * len(chosen) + 0.6, 6.6))
    grid = fig.add_gridspec(3, len(chosen), height_ratios=[1, 1, 0.8])
    for column, index in enumerate(chosen):
        for row, (channel, name) in enumerate(((0, "FLAIR"), (2, "T1ce"))):
            ax = fig.add_subplot(grid[row, column])
            # (x, y) -> rows y (anterior up), columns x reversed (radiological view).
            ax.imshow(np.asarray(slices[index, channel], dtype=np.float32).T[:, ::-1], cmap="gray", origin="lower")
            if tumour is not None and tumour[index].max() > 0.5:
                ax.contour(tumour[index].T[:, ::-1], levels=[0.5], colors="#ff4040", linewidths=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            if column == 0:
                ax.set_ylabel(name)
            if row == 0:
                label = "critical, " if index == critical else ""
                ax.set_title(
                    f"slice {slice_numbers[index]} ({label}#{column + 1 if index in chosen[:top] else '-'})\n"
                    f"attention {attention[index]:.3f}, instance {instance_probability[index]:.2f}",
                    fontsize=8,
                )
            if index == critical:
                for spine in ax.spines.values():
                    spine.set_edgecolor("#d62728")
                    spine.set_linewidth(2.5)
    ax = fig.add_subplot(grid[2, :])
    order = np.argsort(slice_numbers, kind="stable")
    ax.bar(slice_numbers[order], attention[order], width=0.9, color="#3b6ea5", label="attention")
    ax.axhline(1 / len(attention), color="grey", linestyle=":", linewidth=1, label="uniform 1/S")
    twin = ax.twinx()
    twin.plot(slice_numbers[order], instance_probability[order], color="#d62728", linewidth=1, label="instance score")
    twin.set_ylim(0, 1)
    ax.set_xlabel("axial slice of the input volume")
    ax.set_ylabel("attention")
    twin.set_ylabel("instance score")
    ax.legend(fontsize=7, loc="upper left")
    twin.legend(fontsize=7, loc="upper right")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    _save(fig, path)
