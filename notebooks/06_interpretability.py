# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: -papermill,-execution,-ExecuteTime
#     notebook_metadata_filter: -papermill,-widgets
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Interpretability
#
# Both detectors come with **explicit attention**: LAA-Net predicts a heatmap of vulnerable points
# on the blending boundary, MAT produces $M$ attention maps. Post-hoc attribution methods give every
# classifier a map too. Which maps point at the manipulation?
#
# The built-in manipulations of chapter 1 come with **exact ground-truth masks**, so this chapter
# *measures* localisation instead of only drawing it. For every fake test image and every method:
#
# - **pointing game**: does the map's maximum fall inside the manipulated region (all tied maxima
#   must, so a flat map cannot hit by luck)?
# - **AUC**: the map's values as scores of "pixel is manipulated" against the mask (0.5: no better
#   than chance);
# - **energy**: the share of the map's positive mass inside the mask (the energy-based pointing
#   game), to be read against the mask's share of the image.
#
# Methods (`dfattn.explain`, on captum): **Integrated Gradients** (32 steps from a black image),
# **Grad-CAM** through `LayerGradCam` on the backbone's last map, **occlusion** (a black window of
# an eighth of the side, stride half the window), and each model's **own** map.

# %% tags=["parameters"]
profile = None  # smoke | cpu | gpu; None: $DFATTN_PROFILE, else auto
models = ["laanet", "mat", "baseline"]
data = None  # None: as chapter 3 (UTKFace where present, else the built-in faces)
seed = 0
per_family = None  # fake images per family (None: by profile)

# %%
import logging
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from myst_nb import glue

from dfattn.config import book_data, figures_dir, profile_from_env, runs_dir
from dfattn.data.datasets import HeldOutFamilies
from dfattn.data.sources import SplitSizes, face_splits
from dfattn.explain import METHODS, attribution_maps, localisation_scores
from dfattn.plotting import save_figure, save_table, show
from dfattn.protocol import chapter_runs

BOOK = book_data(profile_from_env(profile), data)  # the one read of $DFATTN_PROFILE / $DFATTN_PRETRAINED
logging.getLogger("dfattn.data").setLevel(logging.ERROR)  # images without a face: counted below
PROFILE = BOOK.profile
FIG = figures_dir(PROFILE)
RUNS = runs_dir(PROFILE) / BOOK.key
configs, detectors, test_faces = chapter_runs(models, PROFILE, RUNS, BOOK.spec, seed)  # chapter 3's runs
c0 = configs[models[0]]
per_family = per_family or PROFILE.demo.faces_per_family


def family_fakes(faces, n: int):
    """The first ``n`` fakes of each held-out family made from ``faces``: images, masks, families."""
    bench = HeldOutFamilies(faces, c0.image_size, seed=seed)
    fakes = [i for i in range(len(bench)) if bench.kind(i) != "real"]
    chosen = [i for f in bench.families for i in [j for j in fakes if bench.kind(j) == f][:n]]
    items = [bench[i] for i in chosen]
    return (torch.stack([it["image"] for it in items]),  # (N, 3, H, W)
            torch.stack([it["mask"][0] for it in items]).numpy(),  # (N, H, W)
            np.array([bench.kind(i) for i in chosen]), bench.families)


images, masks, families, family_names = family_fakes(test_faces, per_family)
print(f"{len(images)} fake test images of {BOOK.label} ({per_family} per family) at {c0.image_size} px; "
      f"mask covers {masks.mean():.1%} of the image on average")

# %% [markdown]
# ## The maps
#
# Every method on every model (methods that need explicit attention only where the model has it).
# The figure shows one fake of each family made from **built-in** test faces whatever the training
# data (no picture of a real photo's face is published by this book); the measurements below are
# on the test people of the training data.

# %%
def methods_for(name: str) -> list[str]:
    return [m for m in METHODS if m != "own" or name in ("laanet", "mat")]


def all_maps(x: torch.Tensor) -> dict[tuple[str, str], np.ndarray]:
    out = {}
    for name, model in detectors.items():
        for method in methods_for(name):
            out[(name, method)] = torch.cat([attribution_maps(model, x[k:k + 8], method)
                                             for k in range(0, len(x), 8)]).numpy()
    return out


maps = all_maps(images)
if BOOK.real:
    builtin = face_splits("synthetic", SplitSizes(0, 0, 8), c0.face_size, seed)["test"]
    fig_images, fig_masks, fig_families, _ = family_fakes(builtin, 1)
    fig_maps = all_maps(fig_images)
else:
    fig_images, fig_masks, fig_families, fig_maps = images, masks, families, maps

# %% tags=["hide-input"]
images_, masks_, families_, maps_ = fig_images, fig_masks, fig_families, fig_maps
show_idx = [int(np.flatnonzero(families_ == f)[0]) for f in family_names]
columns = [(n, m) for n in detectors for m in methods_for(n)]
fig, axes = plt.subplots(len(show_idx), len(columns) + 2, figsize=(1.45 * (len(columns) + 2), 1.6 * len(show_idx)))
for r, k in enumerate(show_idx):
    show(axes[r, 0], images_[k], families_[k].replace("_", " "))
    show(axes[r, 1], masks_[k], "mask" if r == 0 else None, cmap="gray", vmin=0, vmax=1)
    for c, key in enumerate(columns, start=2):
        m = maps_[key][k]
        show(axes[r, c], m / (m.max() + 1e-12), f"{key[0]}\n{key[1].replace('integrated_gradients', 'IG')}"
             if r == 0 else None, cmap="inferno", vmin=0, vmax=1)
for ax in axes.flat:
    ax.title.set_fontsize(6)
fig.tight_layout()
save_figure(fig, "06_maps", FIG);

# %% [markdown]
# ```{glue:figure} 06_maps
# :name: fig-06-maps
#
# One fake of each held-out family (rows): the image, its ground-truth mask, and every method's map
# for every model (normalised to its maximum).
# ```
#
# ## Localisation, measured

# %%
scores = pd.concat([localisation_scores({method: m}, masks, families).assign(model=name)
                    for (name, method), m in maps.items()], ignore_index=True)
overall = scores.groupby(["model", "method"], sort=False)[["pointing_game", "auc", "energy"]].mean()
overall["mask share"] = float(masks.mean())
save_table(overall, "06_localisation", FIG, floatfmt=".3f")
per_family_table = scores.pivot_table(index=["model", "method"], columns="group", values="auc", sort=False)
save_table(per_family_table, "06_localisation_by_family", FIG, floatfmt=".3f")
overall

# %% [markdown]
# Localisation AUC per manipulation family:

# %%
per_family_table

# %%
best = overall["auc"].idxmax()
glue("best_loc", f"{best[1].replace('_', ' ')} on {best[0]}", display=False)
glue("best_loc_auc", float(overall.loc[best, "auc"]), display=False)
for name in ("laanet", "mat"):
    if (name, "own") in overall.index:
        glue(f"{name}_own_auc", float(overall.loc[(name, "own"), "auc"]), display=False)
        glue(f"{name}_own_pg", float(overall.loc[(name, "own"), "pointing_game"]), display=False)
glue("mask_share", float(masks.mean()), display=False)

# %% [markdown]
# The best localiser here is {glue:text}`best_loc` (AUC {glue:text}`best_loc_auc:.3f`). LAA-Net's
# own heatmap reaches an AUC of {glue:text}`laanet_own_auc:.3f` with a pointing-game hit rate of
# {glue:text}`laanet_own_pg:.2f`; MAT's attention {glue:text}`mat_own_auc:.3f` and
# {glue:text}`mat_own_pg:.2f`. A map that ignored the image would score 0.5 AUC and put about
# {glue:text}`mask_share:.0%` of its energy inside the masks.
#
# Two cautions. LAA-Net's heatmap was *trained* to mark the blending boundary of self-blended
# fakes, not the manipulated area: on a family without a boundary inside the face (re-synthesis)
# it has nothing to mark, and a boundary ring scores lower AUC against a filled mask than a map of
# the whole region would. MAT's attention maps are not trained to localise anything: they are what
# the classifier pools from, so their overlap with the mask says where it looks, not where it
# found the evidence.
#
# ## Summary
#
# - `dfattn.explain` computes Integrated Gradients, Grad-CAM and occlusion through captum and each
#   model's own map with one call, and measures every map against ground-truth masks (pointing
#   game, AUC, energy; tests on hand-made maps with known answers).
# - Explicit attention is cheap (one forward pass) where attributions cost tens to hundreds of
#   passes; whether it localises better is the table above, per family.
