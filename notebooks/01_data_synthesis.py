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
# # Data synthesis: faces, pseudo-fakes and held-out manipulations
#
# Both detectors in this book learn what a face swap leaves behind without ever seeing a real
# deepfake. LAA-Net {cite:p}`nguyen2024laanet` trains on real faces and *self-blended images*
# (SBI) {cite:p}`shiohara2022sbi`: a face pasted onto a slightly changed copy of itself through a
# soft mask. This chapter builds that data, step by step, and everything that later chapters
# evaluate on:
#
# 1. **faces with landmarks**: built-in synthetic faces (the default, so that the book runs
#    anywhere), or any folder of face photos;
# 2. **masks** from the 68 landmarks, the four hull types of Face X-ray and SBI;
# 3. **SBI**: source/target perturbations, geometric jitter, mask deformation and blur, blend ratio;
# 4. **targets** of LAA-Net: the blending boundary $B = 4M(1-M)$, the heatmap of "vulnerable
#    points" and the self-consistency map;
# 5. **BI**, Face X-ray's blended images {cite:p}`li2020facexray`, with a donor of another identity;
# 6. **held-out manipulation families** (never used for training) with their ground-truth masks,
#    and **degradations** for the robustness benchmark;
# 7. the throughput of all of it.

# %% tags=["parameters"]
profile = None  # smoke | cpu | gpu; None: $DFATTN_PROFILE, else auto
seed = 0

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from myst_nb import glue

from dfattn.config import figures_dir, get_profile, seed_everything
from dfattn.data import blending, manipulations, targets
from dfattn.data.datasets import ManipulationBenchmark, PseudoFakePairs
from dfattn.data.faces import LANDMARK_GROUPS
from dfattn.data.synthetic import SyntheticFaces

PROFILE = get_profile(profile)
FIG = figures_dir(PROFILE)
rng = seed_everything(seed)
SIZE = 256  # faces are synthesised at 256 px, the size of LAA-Net's face crops
print(f"profile {PROFILE.name}: images {PROFILE.image_size} px, heatmap {PROFILE.heatmap_size} px")


def show(ax, image, title=None, cmap=None, vmin=None, vmax=None):
    ax.imshow(image, cmap=cmap, vmin=vmin, vmax=vmax)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)


def save(fig, name):
    fig.savefig(FIG / f"{name}.png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    glue(name, fig, display=False)
    plt.close(fig)


# %% [markdown]
# ## Faces with landmarks
#
# The built-in source draws each face *from* its 68 landmarks (dlib/iBUG layout), so the landmarks
# are exact by construction. A face is a pure function of `(seed, identity, view)`: the same seed
# gives the same bytes in any order and in any DataLoader worker. Identities vary in skin tone and
# texture, face shape, eyes, brows, nose, mouth, hair; views vary in pose, expression, lighting and
# background.

# %% tags=["hide-input"]
faces = SyntheticFaces(12, SIZE, seed=seed)
fig, axes = plt.subplots(2, 6, figsize=(13, 4.6))
colours = plt.cm.tab10(np.linspace(0, 1, len(LANDMARK_GROUPS)))
for k, ax in enumerate(axes.flat):
    face = faces[k]
    show(ax, face.image, f"identity {face.identity}")
    if k < 6:
        for (group, idx), c in zip(LANDMARK_GROUPS.items(), colours):
            ax.scatter(*face.landmarks[list(idx)].T, s=4, color=c)
save(fig, "01_faces")

# %% [markdown]
# ```{glue:figure} 01_faces
# :name: fig-01-faces
#
# Built-in synthetic faces. Top row: the 68 landmarks, coloured by group (jaw, brows, nose, eyes,
# mouth). Bottom row: more identities.
# ```
#
# {numref}`fig-01-faces` shows the variety the generator draws. A real folder of faces goes through
# the same interface, `FolderFaces(root)`: landmarks are found offline with dlib's 68-point
# predictor, cached outside the data folder, and unreadable or face-less images are skipped and
# reported by name. (The book shows no real photographs: it must render without anyone's data.)
#
# Views of one identity share the person and change everything else, which is what BI needs later
# (a donor of *another* identity) and what keeps training and test people apart.

# %% tags=["hide-input"]
views = SyntheticFaces(5, SIZE, seed=seed, first_identity=100, views=5)
fig, axes = plt.subplots(1, 5, figsize=(11, 2.4))
for k, ax in enumerate(axes):
    show(ax, views[k].image, f"identity {views[k].identity}, view {k}")
save(fig, "01_views")

# %% [markdown]
# ```{glue:figure} 01_views
# :name: fig-01-views
#
# Five views of one synthetic identity: pose, expression, lighting and background change.
# ```

# %% [markdown]
# (held-out-families)=
# ## Held-out manipulation families
#
# Pseudo-fakes teach a detector what blending leaves behind; whether that carries over to other
# manipulations is the question of the evaluation chapters. Four families are built for that, and
# **never used in training**. Each returns its exact ground-truth mask: every changed pixel lies
# inside it, which the tests check, and which {doc}`later chapters <02a_laa_net>` use to measure
# localisation rather than just draw it.
#
# | family | how | traces it leaves |
# |---|---|---|
# | `face_swap` | donor of another identity warped piecewise-affinely onto the target's landmarks, colour-matched in LAB, blended with a soft hull | identity change, soft blend boundary |
# | `region_swap` | the donor's eyes, nose or mouth cut with a jittery lasso and pasted, as by hand in a photo editor | sharp local seams, no colour match |
# | `upsampler_resynthesis` | a region re-made at a quarter of the resolution and upsampled by transposed convolutions | checkerboard pattern and spectral peaks of GAN decoders |
# | `poisson_swap` | whole face moved by Poisson (seamless) cloning | no visible seam: gradients match at the border |

# %% tags=["hide-input"]
held_out = SyntheticFaces(8, SIZE, seed=seed + 1, first_identity=10_000)
family_names = list(manipulations.FAMILIES)
fig, axes = plt.subplots(3, len(family_names) + 1, figsize=(2.3 * (len(family_names) + 1), 7.2))
target = held_out[0]
show(axes[0, 0], target.image, "target (real)")
show(axes[1, 0], held_out[1].image, "donor")
axes[2, 0].set_axis_off()
for j, name in enumerate(family_names, start=1):
    result = manipulations.apply_family(name, target, held_out[1], np.random.default_rng(seed + j))
    diff = np.abs(result.image.astype(np.int16) - target.image.astype(np.int16)).sum(-1)
    show(axes[0, j], result.image, name)
    show(axes[1, j], result.mask, "mask", cmap="gray", vmin=0, vmax=1)
    show(axes[2, j], diff, "|fake - real|", cmap="magma")
    assert diff[result.mask == 0].max() == 0, name  # changes only inside the mask
save(fig, "01_families")

# %% [markdown]
# ```{glue:figure} 01_families
# :name: fig-01-families
#
# The held-out manipulation families on one target face. Middle row: ground-truth masks; bottom
# row: the absolute difference from the real image, which is zero outside each mask.
# ```
#
# In {numref}`fig-01-families` the Poisson swap changes pixels over the whole hull although the
# result shows no seam, and the upsampler trace is invisible to the eye but not to a detector
# that looks at high frequencies: its difference image is a fine periodic pattern.
#
# ## Degradations
#
# The robustness benchmark degrades every image, real and fake alike, after manipulation: JPEG,
# Gaussian blur, Gaussian noise and down-scaling, each on a grid of four strengths.

# %% tags=["hide-input"]
fake = manipulations.apply_family("face_swap", target, held_out[1], np.random.default_rng(seed))
crop = np.s_[SIZE // 4 : 3 * SIZE // 4, SIZE // 4 : 3 * SIZE // 4]
deg = manipulations.DEGRADATIONS
fig, axes = plt.subplots(len(deg), 5, figsize=(11, 2.3 * len(deg)))
for i, (name, kind) in enumerate(deg.items()):
    show(axes[i, 0], fake.image[crop], f"{name}: none")
    for j, strength in enumerate(kind.grid, start=1):
        image = kind(fake.image, strength, np.random.default_rng(seed))
        show(axes[i, j], image[crop], f"{kind.parameter} {strength:g}")
save(fig, "01_degradations")

# %% [markdown]
# ```{glue:figure} 01_degradations
# :name: fig-01-degradations
#
# The degradations of the robustness benchmark (rows) at their four strengths, on the centre of a
# face-swapped image.
# ```
