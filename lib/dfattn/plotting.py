"""Small figure and table helpers shared by the chapters: draw an image panel, blend a heat map
over an image, save and glue a figure, write a table as CSV and Markdown, copy a table into the
README."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


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


def heat_overlay(image, heat, alpha: float = 0.45) -> np.ndarray:
    """``image`` with a jet-coloured ``heat`` map blended over it: ``(H, W, 3)`` RGB uint8.

    Args:
        image: ``(H, W, 3)`` uint8, or float in [0, 1], or a ``(3, H, W)`` tensor/array in [0, 1].
        heat: ``(h, w)`` array or tensor; resized bilinearly to ``(H, W)``, divided by its maximum
            and clipped to [0, 1] (a map of zeros colours as 0).
        alpha: weight of the colour map; the image keeps ``1 - alpha``.
    """
    import cv2

    if hasattr(image, "detach"):
        image = image.detach().float().cpu().numpy()
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[0] == 3 and image.shape[-1] != 3:  # (3, H, W)
        image = image.transpose(1, 2, 0)
    if image.dtype != np.uint8:
        image = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    image = np.ascontiguousarray(image)
    if hasattr(heat, "detach"):
        heat = heat.detach().float().cpu().numpy()
    heat = np.asarray(heat, dtype=np.float32)
    height, width = image.shape[:2]
    if heat.shape != (height, width):
        heat = cv2.resize(heat, (width, height), interpolation=cv2.INTER_LINEAR)
    heat = np.clip(heat / max(float(heat.max()), 1e-8), 0, 1)
    colour = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.addWeighted(image, 1 - alpha, cv2.cvtColor(colour, cv2.COLOR_BGR2RGB), alpha, 0)


def show_heat(ax, image, heat, title: str | None = None, alpha: float = 0.45) -> None:
    """Draw :func:`heat_overlay` of ``image`` and ``heat`` on ``ax`` (see :func:`show`)."""
    show(ax, heat_overlay(image, heat, alpha), title)


def save_figure(fig, name: str, folder: Path, glue: bool = True) -> Path:
    """Save ``fig`` as ``folder/name.png`` (byte-stable metadata), glue it for the book, close it."""
    import matplotlib.pyplot as plt  # here, not at import: the table helpers need no matplotlib

    path = Path(folder) / f"{name}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
    if glue:  # glue the saved PNG itself: the book gets an image whatever matplotlib backend ran
        from IPython.display import Image
        from myst_nb import glue as myst_glue

        myst_glue(name, Image(data=path.read_bytes(), format="png"), display=False)
    plt.close(fig)
    return path


def _column_formats(table: pd.DataFrame, floatfmt: str) -> list[str]:
    """``floatfmt`` for each column of ``table``, ``".0f"`` for a float column whose values are all
    whole numbers (counts, epochs: a transposed table of mixed rows makes them floats), so that it
    reads ``2500``, not ``2500.000``; a column with a missing value keeps ``floatfmt``."""
    formats = []
    for i in range(table.shape[1]):
        values = table.iloc[:, i]
        whole = (values.dtype.kind in "fi" and len(values) and values.notna().all()
                 and bool((values % 1 == 0).all()))
        formats.append(".0f" if whole else floatfmt)
    return formats


def markdown_table(table: pd.DataFrame | pd.Series, floatfmt: str = "g", index: bool = True) -> str:
    """GitHub Markdown of ``table``, one line per row (with its index unless ``index=False``). The
    levels of a row MultiIndex become columns of their own (printed as they are, not with
    ``floatfmt``) and MultiIndex column labels are joined with spaces, so no cell reads like a
    Python tuple."""
    if isinstance(table, pd.Series):
        table = table.to_frame()
    if isinstance(table.columns, pd.MultiIndex):
        table = table.set_axis([" ".join(map(str, c)) for c in table.columns], axis=1)
    formats = _column_formats(table, floatfmt)
    if not index or not isinstance(table.index, pd.MultiIndex):
        return table.to_markdown(index=index, floatfmt=([floatfmt] if index else []) + formats) + "\n"
    levels = list(range(table.index.nlevels))
    flat = table.reset_index()
    for i in levels:  # index labels as text: a strength of 90.0 reads "90", not "90.000"
        flat.isetitem(i, flat.iloc[:, i].map(lambda v: f"{v:g}" if isinstance(v, float) else str(v)))
    return flat.to_markdown(index=False, floatfmt=[floatfmt] * len(levels) + formats,
                            disable_numparse=levels) + "\n"


def save_table(table: pd.DataFrame | pd.Series, name: str, folder: Path, floatfmt: str = "g",
               index: bool = True) -> Path:
    """Write ``table`` as ``folder/name.csv`` (full precision) and ``folder/name.md`` (for the README
    and readers of the repository); return the Markdown file's path."""
    folder = Path(folder)
    table.to_csv(folder / f"{name}.csv", index=index)
    path = folder / f"{name}.md"
    path.write_text(markdown_table(table, floatfmt, index))
    return path


def update_readme_table(readme: Path, key: str, markdown: str) -> None:
    """Replace what lies between ``<!-- table:key -->`` and ``<!-- /table:key -->`` in ``readme``
    with ``markdown``; a README without both markers is an error naming the file and the key."""
    readme = Path(readme)
    text = readme.read_text()
    start, end = f"<!-- table:{key} -->", f"<!-- /table:{key} -->"
    if start not in text or end not in text or text.index(start) > text.index(end):
        raise ValueError(f"{readme}: no '{start}' ... '{end}' block to replace")
    head, rest = text.split(start, 1)
    readme.write_text(head + start + "\n" + markdown.rstrip("\n") + "\n" + end + rest.split(end, 1)[1])
