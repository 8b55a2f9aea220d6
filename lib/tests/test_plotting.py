"""Figure and table helpers: panels accept arrays and tensors; saving writes a PNG and closes the
figure; tables become CSV and Markdown without tuple-like cells; README blocks are replaced in place."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from dfattn.plotting import markdown_table, save_figure, save_table, show, update_readme_table  # noqa: E402


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
