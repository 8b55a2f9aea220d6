"""Small figure helpers shared by the chapters: draw an image panel, save and glue a figure."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np


def show(ax, image, title: str | None = None, cmap: str | None = None,
         vmin: float | None = None, vmax: float | None = None) -> None:
    """Draw ``image`` (an array or tensor: ``(H, W)``, ``(H, W, 3)`` or ``(3, H, W)``) on ``ax`` without axes."""
    if hasattr(image, "detach"):
        image = image.detach().float().cpu()
        if image.ndim == 3 and image.shape[0] == 3 and image.shape[-1] != 3:  # (3, H, W)
            image = image.permute(1, 2, 0).clamp(0, 1)
        image = image.numpy()
    ax.imshow(np.asarray(image), cmap=cmap, vmin=vmin, vmax=vmax)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)


def save_figure(fig, name: str, folder: Path, glue: bool = True) -> Path:
    """Save ``fig`` as ``folder/name.png`` (byte-stable metadata), glue it for the book, close it."""
    path = Path(folder) / f"{name}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
    if glue:  # glue the saved PNG itself: the book gets an image whatever matplotlib backend ran
        from IPython.display import Image
        from myst_nb import glue as myst_glue

        myst_glue(name, Image(data=path.read_bytes(), format="png"), display=False)
    plt.close(fig)
    return path
