"""Figures with matplotlib (Agg backend: batch nodes have no display)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_label_distribution(label_counts: dict[str, np.ndarray], class_names: list[str], client_labels: list[str],
                            title: str, path: str | Path) -> Path:
    """Stacked bars: images of each class per client, one panel per split part ([client, class] counts)."""
    plt = _pyplot()
    parts = [p for p in ("train", "val", "test") if p in label_counts]
    n_clients, n_classes = label_counts[parts[0]].shape
    colours = plt.get_cmap("tab20" if n_classes <= 20 else "turbo")(np.linspace(0, 1, max(n_classes, 2)))
    # Only the classes some client holds (a base-to-novel split trains on half of them) go in the legend.
    present = [k for k in range(n_classes) if any(label_counts[p][:, k].sum() for p in parts)]
    legend_columns = 1 + len(present) // 16
    height = max(3.0, 0.35 * n_clients + 1.5, 0.2 * len(present) / legend_columns + 1.0)
    fig, axes = plt.subplots(1, len(parts), figsize=(4.2 * len(parts) + 2.8, height), sharey=True, squeeze=False)
    y = np.arange(n_clients)
    for ax, part in zip(axes[0], parts, strict=True):
        counts = label_counts[part]
        left = np.zeros(n_clients)
        for k in present:
            ax.barh(y, counts[:, k], left=left, color=colours[k], edgecolor="white", linewidth=0.3,
                    label=class_names[k])
            left += counts[:, k]
        ax.set_title(f"{part} ({int(counts.sum())} images)")
        ax.set_xlabel("images per client")
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(y, client_labels)
    axes[0][0].invert_yaxis()
    axes[0][0].set_ylabel("client")
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, title="class", frameon=False,
                       ncol=legend_columns)
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
