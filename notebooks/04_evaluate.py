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
# **real deepfakes** they never saw, and **people** and **manipulations** they never saw:
#
# - **Cross-dataset: DFDC faces.** 1,000 real and 1,000 fake face crops from the Deepfake
#   Detection Challenge {cite:p}`dolhansky2020dfdc` videos (one face per video; each fake made from
#   one of the real videos by one of DFDC's undisclosed face-swap methods), the papers'
#   cross-dataset protocol: train on real faces and their self-blended fakes only, test on real
#   deepfakes. It is a test set: nothing (no epoch, threshold or setting) is chosen on it. Present
#   where `../shared/data/dfdc_faces` is, and the runs trained on real photos.
# - **Cross-manipulation**: the test people's faces, each manipulated by the four held-out
#   families of chapter 1 (face swap, region swap, upsampler re-synthesis, Poisson swap), and the
#   same benchmark under four degradations at four strengths each (JPEG, blur, noise,
#   downscaling).
# - **False alarms by group** on the real test faces (UTKFace's age, gender and race labels).
#
# `dfattn.protocol` holds the protocol, and `dfattn-evaluate` runs it from the command line:
#
# ```bash
# dfattn-evaluate runs/cpu/utkface/laanet/best.safetensors runs/cpu/utkface/mat/best.safetensors --out results --quality
# dfattn-evaluate runs/cpu/utkface/laanet/best.safetensors --data labelled:../shared/data/dfdc_faces --flip-tta
# ```
#
# **Metrics** (`dfattn.evaluate`): AUC, average precision, equal error rate, accuracy at 0.5 and
# balanced accuracy, at frame level and, where frames come from videos, at video level (the mean of
# the frame logits, as both papers do). Every image is scored with **flip test-time augmentation**
# (the mean logit of the image and of its mirror image), as LAA-Net's evaluation does.

# %% tags=["parameters"]
profile = None  # smoke | cpu | gpu; None: $DFATTN_PROFILE, else auto
models = ["laanet", "mat", "baseline"]
data = None  # the face source of training (None: as chapter 3); the test people come from it
seed = 0
flip_tta = True
run_quality = True
quality_faces = 150  # test people in the degradation benchmark (its cost grows with 17 settings)

# %%
import logging
import os
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from myst_nb import glue

from dfattn.checkpoint import read_checkpoint
from dfattn.config import book_data, figures_dir, profile_from_env, repo_root, runs_dir
from dfattn.data.datasets import HeldOutFamilies
from dfattn.data.sources import FaceSubset, SplitSizes, face_splits
from dfattn.data.utkface import utkface_attributes
from dfattn.evaluate import OperatingPoint, evaluate_frames, plot_roc
from dfattn.explain import attribution_maps
from dfattn.plotting import save_figure, save_table, show, show_heat, update_readme_table
from dfattn.protocol import (chapter_runs, cross_dataset, cross_dataset_table, cross_manipulation,
                             cross_manipulation_table, false_alarms_by_group, quality, quality_table,
                             with_intervals)

BOOK = book_data(profile_from_env(profile), data)  # the one read of $DFATTN_PROFILE / $DFATTN_PRETRAINED
logging.getLogger("dfattn.data").setLevel(logging.ERROR)  # images without a face: counted below
PROFILE = BOOK.profile
FIG = figures_dir(PROFILE)
RUNS = runs_dir(PROFILE) / BOOK.key
configs, detectors, test_faces = chapter_runs(models, PROFILE, RUNS, BOOK.spec, seed)  # train-or-load: chapter 3's runs
points = {m: OperatingPoint.from_header(read_checkpoint(RUNS / m / "best.safetensors")[1]) for m in models}
c0 = configs[models[0]]
SIZE = c0.image_size
KW = dict(flip_tta=flip_tta, batch_size=64, progress=False, channels_last=c0.channels_last)
print(f"profile {PROFILE.name}, trained on {BOOK.label}: {len(test_faces)} test people at {SIZE} px; "
      f"models {models}")

# %% [markdown]
# ## Real deepfakes: DFDC faces
#
# Each DFDC crop is prepared as the training faces were: dlib's landmarks (cached), the training
# crop with its margin, then the input size (`LabelledFolder(align=...)`). The crops are tight, so
# the margin reaches past their edges and is filled by reflection, as it is for training photos
# that are cut close. A crop in which dlib finds no face is scored resized as it is, and counted.
# Every metric comes with a 95 % stratified bootstrap interval (1,000 resamples), and each
# detector's paired difference to the baseline is computed on the same resamples of the same
# images: an interval that contains 0 means these 2,000 images do not tell the two apart.

# %%
glue_keys = [f"{m}_dfdc_{k}" for m in models for k in ("auc", "auc_low", "auc_high", "ap", "tpr5")]
glue_keys += [f"{m}_dfdc_dauc{k}" for m in models if m != "baseline" for k in ("", "_low", "_high")]
if BOOK.cross_dataset is not None:
    dfdc_frames, dfdc_counts = cross_dataset(detectors, configs, BOOK.cross_dataset,
                                             workers=os.cpu_count() or 1, **KW)  # landmarks: a process per core
    dfdc, dfdc_diff = cross_dataset_table(dfdc_frames, seed=seed)
    save_table(dfdc, "04_cross_dataset", FIG, floatfmt=".3f")
    save_table(with_intervals(dfdc), "04_cross_dataset_ci", FIG)
    values = {}
    for m in models:
        values.update({f"{m}_dfdc_auc": dfdc.loc[m, "auc"], f"{m}_dfdc_auc_low": dfdc.loc[m, "auc_low"],
                       f"{m}_dfdc_auc_high": dfdc.loc[m, "auc_high"], f"{m}_dfdc_ap": dfdc.loc[m, "ap"],
                       f"{m}_dfdc_tpr5": dfdc.loc[m, "tpr_at_fpr_5"]})
    if dfdc_diff is not None:
        save_table(dfdc_diff, "04_cross_dataset_differences", FIG, floatfmt=".3f")
        save_table(with_intervals(dfdc_diff), "04_cross_dataset_differences_ci", FIG)
        for m in models:
            if f"{m} - baseline" in dfdc_diff.index:
                row = dfdc_diff.loc[f"{m} - baseline"]
                values.update({f"{m}_dfdc_dauc": row["auc"], f"{m}_dfdc_dauc_low": row["auc_low"],
                               f"{m}_dfdc_dauc_high": row["auc_high"]})
    print(f"{dfdc_counts['images']} images: {dfdc_counts['scored']} scored, no face found in "
          f"{dfdc_counts['no_face']} (scored resized), {dfdc_counts['unreadable']} unreadable")
    display(with_intervals(dfdc))
else:
    values = {}
    print("no cross-dataset test: ../shared/data/dfdc_faces is absent or the runs are on the built-in faces")
for key in glue_keys:
    glue(key, float(values.get(key, float("nan"))), display=False)

# %% [markdown]
# The paired differences to the baseline (detector minus baseline; AUC, AP and TPR: positive is
# better; EER: negative is better):

# %%
if BOOK.cross_dataset is not None and dfdc_diff is not None:
    display(with_intervals(dfdc_diff))

# %% [markdown]
# On DFDC's real deepfakes LAA-Net scores an AUC of {glue:text}`laanet_dfdc_auc:.3f`
# ({glue:text}`laanet_dfdc_auc_low:.3f` to {glue:text}`laanet_dfdc_auc_high:.3f`), MAT
# {glue:text}`mat_dfdc_auc:.3f` ({glue:text}`mat_dfdc_auc_low:.3f` to
# {glue:text}`mat_dfdc_auc_high:.3f`) and the baseline {glue:text}`baseline_dfdc_auc:.3f`
# ({glue:text}`baseline_dfdc_auc_low:.3f` to {glue:text}`baseline_dfdc_auc_high:.3f`). LAA-Net
# minus the baseline is {glue:text}`laanet_dfdc_dauc:+.3f` AUC ({glue:text}`laanet_dfdc_dauc_low:+.3f`
# to {glue:text}`laanet_dfdc_dauc_high:+.3f`), MAT minus the baseline
# {glue:text}`mat_dfdc_dauc:+.3f` ({glue:text}`mat_dfdc_dauc_low:+.3f` to
# {glue:text}`mat_dfdc_dauc_high:+.3f`).
#
# **None of the three reaches 0.70 here, and explicit attention does not help on real deepfakes.**
# All three are far above chance (every interval is above 0.55) and far below the detectors
# trained at paper scale. Both attention models score *below* the plain baseline by about 0.02 AUC:
# for LAA-Net the paired interval lies just below zero, for MAT it touches zero. So on these 2,000
# DFDC faces, at this scale, LAA-Net's localised attention does not beat the baseline that shares
# its backbone and training data; if anything it is slightly worse. The same ordering holds on the
# held-out families of UTKFace people below. Two things this run cannot separate: the scale
# (Lite0 at 128 px, minutes of training) and the method; chapter 5's ablations of the heads at an
# even smaller scale are the closest look.
#
# For scale (other splits, so not comparable point for point): DeepfakeBench's EfficientNet-B4,
# trained *with labels* on FF++ (c23), reaches 0.696 frame-level AUC on DFDC, and the best of its
# detectors 0.719; SBI (B4 at 380 px, trained on FF++ reals on a GPU) reports 0.724 at video
# level. The models here are EfficientNet-Lite0 at 128 px trained for minutes on two CPU cores.
#
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
# architectures. Face and Poisson swaps, which blend another person's face in through a soft mask
# (the kind of boundary SBI trains on), are caught best, and upsampler re-synthesis (a face region
# re-made at a quarter of the resolution and upsampled by transposed convolutions, a soft region
# with a periodic checkerboard inside a sharp face) nearly as well. **Region swap is near chance
# for every model**: it pastes a donor's eyes, nose or mouth with a hard or barely feathered edge,
# a small region whose edge looks nothing like the soft blend masks SBI trains on. Explicit
# attention (LAA-Net's heatmap and consistency heads, MAT's attention maps) does not change this
# at this scale: on UTKFace people the baseline is ahead of both on every family.
#
# ## Quality
#
# The same benchmark under each degradation (the real images degraded alike), on the first
# test people (`quality_faces`); AUC of all held-out fakes against the reals.

# %%
if run_quality:
    quality_people = FaceSubset(test_faces, range(min(quality_faces, len(test_faces))))
    qframes = quality(detectors, quality_people, SIZE, seed, **KW)
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
# ## False alarms by group
#
# A detector that flags some people's real photos more often than others' harms them first.
# UTKFace's file names carry age, gender and race (the dataset's own labels); here is each model's
# false-positive rate on the real test faces at its **operating threshold**, chosen on validation
# by `dfattn-train` (best balanced accuracy on held-out pseudo-fakes), with 95 % Wilson intervals.

# %%
reals = frames[frames["kind"] == "real"]
first = reals[reals["model"] == models[0]]
attributes = [utkface_attributes(test_faces[int(i)].name) for i in first["index"]] if BOOK.real else []
if attributes and all(a is not None for a in attributes):
    groups = {k: [a[k] for a in attributes] for k in ("gender", "race", "age")}
    fpr = false_alarms_by_group(reals, points, groups)
    save_table(fpr, "04_false_alarms", FIG, floatfmt=".3f")
    for m in models:
        glue(f"{m}_fpr_all", float(fpr.loc[("all", "all"), m]), display=False)
        by = fpr.drop(("all", "all"))
        glue(f"{m}_fpr_max_group", " ".join(by[m].idxmax()), display=False)
        glue(f"{m}_fpr_max", float(by[m].max()), display=False)
        glue(f"{m}_fpr_min_group", " ".join(by[m].idxmin()), display=False)
        glue(f"{m}_fpr_min", float(by[m].min()), display=False)
    display(fpr.round(3))
else:
    print("no group labels: the test faces are not UTKFace photos")
    for m in models:
        for k in ("fpr_all", "fpr_max", "fpr_min"):
            glue(f"{m}_{k}", float("nan"), display=False)
        for k in ("fpr_max_group", "fpr_min_group"):
            glue(f"{m}_{k}", "-", display=False)

# %% [markdown]
# At its threshold LAA-Net flags {glue:text}`laanet_fpr_all:.1%` of the real test faces, MAT
# {glue:text}`mat_fpr_all:.1%` and the baseline {glue:text}`baseline_fpr_all:.1%`. LAA-Net's highest
# rate is on {glue:text}`laanet_fpr_max_group` ({glue:text}`laanet_fpr_max:.1%`) and its lowest on
# {glue:text}`laanet_fpr_min_group` ({glue:text}`laanet_fpr_min:.1%`); read each against its
# interval and count: groups with few faces have wide intervals, and two rates whose intervals
# overlap are not shown to differ. The threshold was chosen on pseudo-fakes, so these rates are not
# the validation FPR the checkpoint stores.
#
# In this run the differences *between* models are larger than those between groups: the baseline's
# threshold flags about half as many real faces as LAA-Net's and a third as many as MAT's, and
# within each model every group's interval overlaps the others'. With 37 to 256 faces per group,
# these data show no group treated differently; they could not show a difference of a few points.
#
# ## Decisions, right and wrong
#
# For LAA-Net: its most confident correct call on a fake, the fake it missed worst, and the real
# image it flagged most; with LAA-Net's own heatmap (sigmoid of the heatmap head), MAT's attention
# (mean of its maps) and the ground-truth mask of the manipulation. The figure shows built-in test
# faces whatever the training data: no picture of a real photo's face is published by this book.

# %%
shown_faces = test_faces
shown_frames = frames
if BOOK.real:  # built-in faces of new identities, scored like the real test people
    shown_faces = face_splits("synthetic", SplitSizes(0, 0, 60), c0.face_size, seed)["test"]
    shown_frames = cross_manipulation(detectors, shown_faces, SIZE, seed, sbi=False, **KW)
bench = HeldOutFamilies(shown_faces, SIZE, seed=seed)
lf = shown_frames[(shown_frames["model"] == models[0]) & (shown_frames["kind"] != "sbi")].reset_index(drop=True)
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
    probs = ", ".join(f"{m} {shown_frames[(shown_frames['model'] == m) & (shown_frames['kind'] != 'sbi')].iloc[k]['prob']:.2f}"
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
    for key, path in {"cross_dataset": "04_cross_dataset_ci.md",
                      "cross_dataset_differences": "04_cross_dataset_differences_ci.md",
                      "cross": "04_cross_manipulation.md", "quality": "04_quality.md"}.items():
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
