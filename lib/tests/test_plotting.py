"""Figure helpers: panels accept arrays and tensors; saving writes a PNG and closes the figure."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from dfattn.plotting import save_figure, show  # noqa: E402


def test_show_takes_chw_tensors_and_arrays(tmp_path):
    fig, (a, b) = plt.subplots(1, 2)
    show(a, torch.rand(3, 8, 6), "tensor")
    show(b, np.zeros((8, 6)), cmap="gray")
    assert a.images[0].get_array().shape == (8, 6, 3) and not a.axison
    assert a.get_title() == "tensor"
    path = save_figure(fig, "panel", tmp_path, glue=False)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(fig.number)


def test_show_keeps_hwc_tensors():
    fig, ax = plt.subplots()
    show(ax, torch.rand(8, 6, 3))
    assert ax.images[0].get_array().shape == (8, 6, 3)
    plt.close(fig)
