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
# # Evaluation
#
# The models of {doc}`03_train` saw only real faces and self-blended pseudo-fakes. Here they meet
# **people they never saw** and **manipulations they never saw**: the four held-out families of
# chapter 1 (face swap, region swap, upsampler re-synthesis, Poisson swap), each with an exact
# ground-truth mask, and the same benchmark under four degradations at four strengths each
# (JPEG, blur, noise, downscaling). This is the cross-manipulation protocol of the papers, on data
# that anyone can regenerate; `dfattn.protocol` holds it, and `dfattn-evaluate` runs it from the
# command line:
#
# ```bash
# dfattn-evaluate runs/cpu/laanet/best.safetensors runs/cpu/mat/best.safetensors --out results --quality
# dfattn-evaluate runs/cpu/laanet/best.safetensors --data labelled:my_faces  # real/ and fake/ folders
# ```
#
# **Metrics** (`dfattn.evaluate`): AUC, average precision, equal error rate, accuracy at 0.5 and
# balanced accuracy, at frame level and, where frames come from videos, at video level (the mean of
# the frame logits, as both papers do). Every image is scored with **flip test-time augmentation**
# (the mean logit of the image and of its mirror image), as LAA-Net's evaluation does.

# %% tags=["parameters"]
profile = None  # smoke | cpu | gpu; None: $DFATTN_PROFILE, else auto
models = ["laanet", "mat", "baseline"]
data = "synthetic"  # the face source of training; the test people come from it
seed = 0
flip_tta = True
run_quality = True

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from myst_nb import glue

from dfattn.config import figures_dir, profile_from_env, repo_root, runs_dir
from dfattn.data.datasets import HeldOutFamilies
from dfattn.evaluate import evaluate_frames, plot_roc
from dfattn.explain import attribution_maps
from dfattn.plotting import save_figure, save_table, show, show_heat, update_readme_table
from dfattn.protocol import chapter_runs, cross_manipulation, cross_manipulation_table, quality, quality_table

PROFILE = profile_from_env(profile)  # the one read of $DFATTN_PROFILE / $DFATTN_PRETRAINED
FIG = figures_dir(PROFILE)
RUNS = runs_dir(PROFILE)
configs, detectors, test_faces = chapter_runs(models, PROFILE, RUNS, data, seed)  # train-or-load: chapter 3's runs
c0 = configs[models[0]]
SIZE = c0.image_size
KW = dict(flip_tta=flip_tta, batch_size=64, progress=False, channels_last=c0.channels_last)
print(f"profile {PROFILE.name}: {len(test_faces)} test people at {SIZE} px; models {models}")

# %% [markdown]
# ## Cross-manipulation
#
# Each family's fakes are scored against all the real test images (AUC); `mean` is the mean over
# the four held-out families; `sbi` is the AUC on self-blended fakes of the test people, the
# training distribution on new faces, shown beside the mean and not in it.

# %%
frames = cross_manipulation(detectors, test_faces, SIZE, seed, **KW)
cross = cross_manipulation_table(frames)
save_table(cross, "04_cross_manipulation", FIG, floatfmt=".3f")
cross

# %% [markdown]
# All the metrics, for all held-out fakes together against the reals (frame level):

# %%
held_out = frames[frames["kind"] != "sbi"]
metrics = pd.DataFrame({m: evaluate_frames(part).loc["all"] for m, part in held_out.groupby("model", sort=False)}).T
save_table(metrics, "04_metrics", FIG, floatfmt=".3f")
metrics

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
plot_roc({m: part for m, part in held_out.groupby("model", sort=False)}, ax=axes[0],
         title="held-out families")
plot_roc({m: part[part["kind"].isin(["real", "sbi"])] for m, part in frames.groupby("model", sort=False)},
         ax=axes[1], title="self-blended fakes of the test people")
fig.tight_layout()
save_figure(fig, "04_roc", FIG);

# %% [markdown]
# ```{glue:figure} 04_roc
# :name: fig-04-roc
#
# ROC curves on the held-out families (left) and on pseudo-fakes of the test people (right).
# ```

# %%
for m in models:
    glue(f"{m}_sbi_auc", float(cross.loc[m, "sbi"]), display=False)
    glue(f"{m}_mean_auc", float(cross.loc[m, "mean"]), display=False)
    families = cross.loc[m].drop(["mean", "sbi"])
    glue(f"{m}_worst_family", families.idxmin().replace("_", " "), display=False)
    glue(f"{m}_worst_auc", float(families.min()), display=False)
    glue(f"{m}_best_family", families.idxmax().replace("_", " "), display=False)
    glue(f"{m}_best_auc", float(families.max()), display=False)

# %% [markdown]
# **Reading the table.** On pseudo-fakes of people it never saw, LAA-Net scores
# {glue:text}`laanet_sbi_auc:.3f` AUC, MAT {glue:text}`mat_sbi_auc:.3f` and the baseline
# {glue:text}`baseline_sbi_auc:.3f`. On manipulations none of them saw, the means are
# {glue:text}`laanet_mean_auc:.3f`, {glue:text}`mat_mean_auc:.3f` and
# {glue:text}`baseline_mean_auc:.3f`. Where each fails:
#
# - **LAA-Net** is best on {glue:text}`laanet_best_family` ({glue:text}`laanet_best_auc:.3f`) and
#   worst on {glue:text}`laanet_worst_family` ({glue:text}`laanet_worst_auc:.3f`);
# - **MAT** is best on {glue:text}`mat_best_family` ({glue:text}`mat_best_auc:.3f`) and worst on
#   {glue:text}`mat_worst_family` ({glue:text}`mat_worst_auc:.3f`);
# - the **baseline** is best on {glue:text}`baseline_best_family` ({glue:text}`baseline_best_auc:.3f`)
#   and worst on {glue:text}`baseline_worst_family` ({glue:text}`baseline_worst_auc:.3f`).
#
# The pattern is shared by all three models, so it says more about the data than about the
# architectures. Upsampler re-synthesis (a face region re-made at a quarter of the resolution and
# upsampled by transposed convolutions) is caught best: it leaves a soft region with a periodic
# checkerboard inside a sharp face, a blend boundary of sorts. Face and Poisson swaps, which blend
# another person's face in through a soft mask, come next. **Region swap is near chance for every
# model**: it pastes a donor's eyes, nose or mouth with a hard or barely feathered edge, a small
# region whose edge looks nothing like the soft blend masks SBI trains on. Explicit attention
# (LAA-Net's heatmap and consistency heads, MAT's attention maps) does not change this at this
# scale: the baseline is within a few points of both on every family.
#
# ## Quality
#
# The same benchmark under each degradation (the real images degraded alike); AUC of all held-out
# fakes against the reals.

# %%
if run_quality:
    qframes = quality(detectors, test_faces, SIZE, seed, **KW)
    qtable = quality_table(qframes)
    save_table(qtable, "04_quality", FIG, floatfmt=".3f")
    degradations = list(dict.fromkeys(qtable.index.get_level_values(0)))
    fig, axes = plt.subplots(1, len(degradations), figsize=(3.2 * len(degradations), 3.2), sharey=True)
    for ax, name in zip(np.atleast_1d(axes), degradations):
        part = qtable.loc[name]
        for m in models:
            ax.plot(range(len(part)), part[m], marker="o", label=m)
            ax.axhline(metrics.loc[m, "auc"], ls=":", lw=0.8, color=ax.lines[-1].get_color())
        ax.set_xticks(range(len(part)), [f"{s:g}" for s in part.index])
        ax.set(title=name, xlabel="strength (mildest first)", ylim=(0.4, 1.0))
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("AUC (held-out families)")
    np.atleast_1d(axes)[0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, "04_quality", FIG)
    drops = (qtable.groupby(level=0).min() - metrics["auc"]).round(3)
    worst = {m: drops[m].idxmin() for m in models}
    for m in models:
        glue(f"{m}_worst_degradation", worst[m], display=False)
        glue(f"{m}_worst_drop", float(-drops.loc[worst[m], m]), display=False)
    display(qtable)

# %% [markdown]
# ```{glue:figure} 04_quality
# :name: fig-04-quality
#
# AUC on the held-out families under each degradation, mildest first; dotted: the clean AUC.
# ```
#
# The strongest setting of {glue:text}`laanet_worst_degradation` costs LAA-Net
# {glue:text}`laanet_worst_drop:.3f` AUC; MAT loses most under {glue:text}`mat_worst_degradation`
# ({glue:text}`mat_worst_drop:.3f`) and the baseline under {glue:text}`baseline_worst_degradation`
# ({glue:text}`baseline_worst_drop:.3f`). Blending boundaries are high-frequency evidence: what
# removes high frequencies (blur, downscaling, strong JPEG) removes the evidence.
#
# ## Decisions, right and wrong
#
# For LAA-Net: its most confident correct call on a fake, the fake it missed worst, and the real
# image it flagged most; with LAA-Net's own heatmap (sigmoid of the heatmap head), MAT's attention
# (mean of its maps) and the ground-truth mask of the manipulation.

# %%
bench = HeldOutFamilies(test_faces, SIZE, seed=seed)
lf = frames[(frames["model"] == models[0]) & (frames["kind"] != "sbi")].reset_index(drop=True)
picks = {
    "caught fake": lf[lf["label"] == 1]["prob"].idxmax(),
    "missed fake": lf[lf["label"] == 1]["prob"].idxmin(),
    "false alarm": lf[lf["label"] == 0]["prob"].idxmax(),
    "correct real": lf[lf["label"] == 0]["prob"].idxmin(),
}
fig, axes = plt.subplots(len(picks), 4, figsize=(8.4, 2.2 * len(picks)))
for row, (what, k) in zip(axes, picks.items()):
    item = bench[k]
    x = item["image"][None]
    heat = {m: attribution_maps(detectors[m], x, "own")[0] for m in ("laanet", "mat") if m in detectors}
    probs = ", ".join(f"{m} {frames[(frames['model'] == m) & (frames['kind'] != 'sbi')].iloc[k]['prob']:.2f}"
                      for m in models)
    show(row[0], item["image"], f"{what}: {lf.loc[k, 'kind'].replace('_', ' ')}\nP(fake) {probs}")
    row[0].title.set_fontsize(7)
    for ax, m in zip(row[1:3], ("laanet", "mat")):
        if m in heat:
            show_heat(ax, item["image"], heat[m], f"{m} map")
        else:
            ax.set_axis_off()
    show(row[3], item["mask"][0], "ground-truth mask", cmap="gray", vmin=0, vmax=1)
fig.tight_layout()
save_figure(fig, "04_decisions", FIG);

# %% [markdown]
# ```{glue:figure} 04_decisions
# :name: fig-04-decisions
#
# LAA-Net's decisions on test images, with the explicit attention of LAA-Net and MAT and the
# ground-truth manipulation mask (black for real images). The probabilities of all three models
# are in each row's title.
# ```
#
# Chapter 6 measures how well these maps localise the manipulation, against captum's attributions.

# %%
if PROFILE.name != "smoke":  # the README shows the book's tables, from the files written above
    for key, path in {"cross": "04_cross_manipulation.md", "quality": "04_quality.md"}.items():
        if (FIG / path).exists():
            update_readme_table(repo_root() / "README.md", key, (FIG / path).read_text())

# %% [markdown]
# ## Summary
#
# - `dfattn.evaluate`: frame- and video-level AUC, AP, EER, accuracy and balanced accuracy, flip
#   test-time augmentation, ROC curves; `dfattn.protocol`: the cross-manipulation and quality
#   benchmarks on held-out people, with every model scored on the same images.
# - Pseudo-fakes of new people are easy for all three models; held-out manipulations are not, and
#   the gap differs by family: the table above is the honest one to quote.
# - Degradations that remove high frequencies hurt most.
# - The same command evaluates a labelled folder (`real/`, `fake/`) or a preprocessed benchmark
#   (FF++, Celeb-DF, DFDC) at frame and video level.
