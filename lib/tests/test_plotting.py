"""Figure and table helpers: panels accept arrays and tensors; saving writes a PNG and closes the
figure; tables become CSV and Markdown without tuple-like cells; README blocks are replaced in place."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from dfattn.plotting import (heat_overlay, markdown_table, save_figure, save_table, show, show_heat,  # noqa: E402
                             update_readme_table)


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


def _two_level_table():
    index = pd.MultiIndex.from_tuples([("jpeg", 90.0), ("blur", 0.5)], names=["degradation", "strength"])
    return pd.DataFrame({"laanet": [0.79883, 0.8], "mat": [0.5, 0.25]}, index=index)


def test_markdown_table_spreads_a_multiindex_over_columns():
    lines = markdown_table(_two_level_table(), floatfmt=".3f").splitlines()
    assert [c.strip() for c in lines[0].strip("|").split("|")] == ["degradation", "strength", "laanet", "mat"]
    assert [c.strip() for c in lines[2].strip("|").split("|")] == ["jpeg", "90", "0.799", "0.500"]
    assert [c.strip() for c in lines[3].strip("|").split("|")] == ["blur", "0.5", "0.800", "0.250"]
    assert "(" not in "".join(lines)


def test_markdown_table_keeps_a_plain_index_and_joins_column_levels():
    table = pd.DataFrame([[1.0, 2.0]], index=pd.Index(["laanet"], name="model"),
                         columns=pd.MultiIndex.from_tuples([("auc", "mean"), ("auc", "std")]))
    lines = markdown_table(table).splitlines()
    assert [c.strip() for c in lines[0].strip("|").split("|")] == ["model", "auc mean", "auc std"]
    assert [c.strip() for c in lines[2].strip("|").split("|")] == ["laanet", "1", "2"]


def test_save_table_writes_csv_that_reads_back_and_markdown(tmp_path):
    table = _two_level_table()
    md = save_table(table, "quality", tmp_path, floatfmt=".3f")
    assert md == tmp_path / "quality.md" and md.read_text() == markdown_table(table, ".3f")
    back = pd.read_csv(tmp_path / "quality.csv", index_col=[0, 1])
    pd.testing.assert_frame_equal(back, table)


def test_update_readme_table_replaces_only_the_marked_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- table:q -->\nold\n<!-- /table:q -->\nafter\n<!-- table:r -->\nkeep\n<!-- /table:r -->\n")
    update_readme_table(readme, "q", "| a |\n|---|\n| 1 |\n")
    assert readme.read_text() == ("intro\n<!-- table:q -->\n| a |\n|---|\n| 1 |\n<!-- /table:q -->\nafter\n"
                                  "<!-- table:r -->\nkeep\n<!-- /table:r -->\n")
    with pytest.raises(ValueError, match=r"README\.md.*table:missing"):
        update_readme_table(readme, "missing", "x")


def test_heat_overlay_blends_a_jet_map_over_the_image():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    out = heat_overlay(image, np.zeros((3, 3)))
    assert out.shape == (12, 10, 3) and out.dtype == np.uint8
    jet_zero = np.array([0, 0, 128])  # the jet colour of 0, RGB
    expected = 0.55 * image.astype(float) + 0.45 * jet_zero
    assert np.abs(out.astype(float) - expected).max() <= 1
    # float images in [0, 1] and (3, H, W) tensors give the same picture
    assert np.array_equal(heat_overlay(torch.from_numpy(image).permute(2, 0, 1) / 255.0, np.zeros((3, 3))), out)
    assert np.array_equal(heat_overlay(image / 255.0, torch.zeros(3, 3)), out)


def test_heat_overlay_puts_the_hot_spot_where_the_heat_is():
    grey = np.full((16, 16, 3), 128, np.uint8)
    heat = torch.zeros(4, 4)
    heat[0, 3] = 5.0  # top right; normalised by its maximum
    out = heat_overlay(grey, heat).astype(int)
    redness = out[..., 0] - out[..., 2]
    row, col = np.unravel_index(redness.argmax(), redness.shape)
    assert row < 4 and col >= 12
    assert redness[-1, 0] < 0  # cold corner: blue


def test_heat_overlay_equals_the_detect_tools_blend_on_a_normalised_map():
    import cv2

    rng = np.random.default_rng(1)
    face = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    heat = rng.random((8, 8))
    heat /= heat.max()
    colour = cv2.applyColorMap((np.clip(heat, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)
    old = cv2.addWeighted(face, 0.55, cv2.cvtColor(colour, cv2.COLOR_BGR2RGB), 0.45, 0)
    assert np.array_equal(heat_overlay(face, heat), old)


def test_show_heat_draws_the_overlay():
    fig, ax = plt.subplots()
    show_heat(ax, torch.rand(3, 8, 6), torch.rand(2, 2), "map")
    assert ax.images[0].get_array().shape == (8, 6, 3) and ax.get_title() == "map"
    plt.close(fig)


def test_markdown_table_prints_whole_number_columns_as_integers():
    """Counts and epochs that a transposed table turned into floats read 2500, not 2500.000; real
    fractions keep floatfmt, and a column with a missing value is left as it is."""
    table = pd.DataFrame({"auc": {"a": 0.5, "b": 0.75}, "n": {"a": 2500.0, "b": 300.0},
                          "epochs": {"a": 3.0, "b": float("nan")}})
    lines = markdown_table(table, floatfmt=".3f").splitlines()
    cells = [c.strip() for c in lines[2].split("|")[1:-1]]
    assert cells == ["a", "0.500", "2500", "3.000"]
    assert [c.strip() for c in lines[3].split("|")[1:-1]] == ["b", "0.750", "300", "nan"]
