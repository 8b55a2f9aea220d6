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
# # LAA-Net, block by block
#
# LAA-Net {cite:p}`nguyen2024laanet` is a binary deepfake classifier with *explicit* attention:
# it is told, during training, where the blending artefacts of a pseudo-fake are, and has to
# predict them. This chapter builds it from `dfattn.models.laanet` and follows one self-blended
# image from {doc}`01_data_synthesis` through every block:
#
# 1. the **backbone**, an ImageNet EfficientNet {cite:p}`tan2019efficientnet` read at strides 8,
#    16 and 32 plus its 1x1 head convolution;
# 2. the **E-FPN** decoder, which fuses each lower-level map $x$ with the decoder map $y$ of the
#    same size as $[\,y \,\|\, (1-\sigma(y)) \odot x\,]$ and upsamples to stride 4;
# 3. three **heads** on the fused map: classification, a heatmap of vulnerable points, and a
#    self-consistency embedding;
# 4. the **losses**, and the model's size and cost.
#
# Nothing in this chapter is a trained detector: the heads are shown untrained and after a brief
# fit on a handful of pairs, to make visible what each block computes and what it is asked to
# learn. Training and evaluation are the next chapters.

# %% tags=["parameters"]
profile = None  # smoke | cpu | gpu; None: $DFATTN_PROFILE, else auto
seed = 0

# %%
import copy

import matplotlib.pyplot as plt
import pandas as pd
import torch
from myst_nb import glue

from dfattn.config import figures_dir, get_device, profile_from_env, seed_everything
from dfattn.data.datasets import PseudoFakePairs, collate_pairs
from dfattn.data.synthetic import SyntheticFaces
from dfattn.models.laanet import (
    OFFICIAL_BI_WEIGHTS,
    OFFICIAL_SBI_WEIGHTS,
    LAANet,
    LAANetConfig,
    LAANetLossWeights,
    consistency_map,
    laanet_loss,
)
from dfattn.models.flops import count_flops, count_parameters
from dfattn.plotting import save_figure, save_table, show

PROFILE = profile_from_env(profile)  # the one read of $DFATTN_PROFILE / $DFATTN_PRETRAINED
FIG = figures_dir(PROFILE)
DEVICE = get_device()
seed_everything(seed)
S = PROFILE.train.image_size
print(f"profile {PROFILE.name}: {PROFILE.train.backbone} at {S} px on {DEVICE}, "
      f"ImageNet weights: {PROFILE.train.pretrained}")


def save(fig, name):
    save_figure(fig, name, FIG)


# %% [markdown]
# ## What LAA-Net is asked to predict
#
# The input is a real face and its self-blended twin from {doc}`01_data_synthesis`, at the
# profile's size. For the fake, the blend mask $M$ gives the blending boundary $B = 4M(1-M)$
# (1 where the mask is mid-transition, 0 in pure source or target), and from it, at a quarter of
# the input resolution, two targets (real images get all zeros):
#
# - the **heatmap** of *vulnerable points*: in each quadrant, the pixels where $B$ is largest,
#   each with a small Gaussian of peak 1 (CenterNet-style, adaptive $\sigma$);
# - the **self-consistency** map: about $B$ itself in every quadrant that holds a vulnerable point,
#   exactly 1 at the points. The point where it is largest is the *anchor* of the consistency head.
#
# The model takes images in $[0, 1]$ and normalises them itself with the backbone's ImageNet
# statistics (the official code uses mean = std = 0.5 for its AdvProp weights:
# `normalization="half"`).

# %%
pairs = PseudoFakePairs(SyntheticFaces(16, 256, seed=seed), S, train=False, seed=seed)
batch = {k: v.to(DEVICE) for k, v in collate_pairs([pairs[i] for i in range(len(pairs))]).items()}
FAKES = (batch["label"] == 1).nonzero().flatten()[:3].tolist()
SHOWN = [0] + FAKES  # one real image and three fakes in the figures below
h = PROFILE.heatmap_size
print(f"{len(batch['image'])} images ({int(batch['label'].sum())} fakes) of {S} px, targets {h} px")

# %% tags=["hide-input"]
fig, axes = plt.subplots(len(FAKES), 4, figsize=(10.5, 2.8 * len(FAKES)))
for row, k in zip(axes, FAKES):
    heat, cons = batch["heatmap"][k, 0].cpu(), batch["consistency"][k, 0].cpu()
    show(row[0], batch["image"][k], "pseudo-fake")
    show(row[1], batch["mask"][k, 0], "blend mask M", "gray", 0, 1)
    show(row[2], heat, "heatmap target", "magma", 0, 1)
    ys, xs = torch.nonzero(heat == 1, as_tuple=True)
    row[2].scatter(xs, ys, s=60, facecolors="none", edgecolors="cyan", linewidths=1)
    for ax in row[2:]:
        ax.axhline(h / 2 - 0.5, color="w", lw=0.6, ls="--")
        ax.axvline(h / 2 - 0.5, color="w", lw=0.6, ls="--")
    show(row[3], cons, "consistency target, anchor", "magma", 0, 1)
    a = int(cons.flatten().argmax())
    row[3].scatter([a % h], [a // h], marker="x", s=60, color="cyan")
save(fig, "02a_targets")

# %% [markdown]
# ```{glue:figure} 02a_targets
# :name: fig-02a-targets
#
# Targets of three pseudo-fakes. The heatmap target is a few sharp Gaussians at the maxima of the
# blending boundary in each quadrant (circled; dashed lines: the quadrants); the consistency target
# is the boundary itself in the quadrants that hold a point, and its maximum is the anchor (cross).
# ```
#
# ## The model
#
# One configuration object describes the architecture; the defaults are the paper's (E-FPN,
# Inception block with four 1x1 convolutions, 64-channel heads, 256-d embedding, dropout 0.4 on
# the backbone maps).

# %%
config = LAANetConfig(backbone=PROFILE.train.backbone, pretrained=PROFILE.train.pretrained)
model = LAANet(config).to(DEVICE).to(memory_format=torch.channels_last)
config

# %% [markdown]
# ## Backbone
#
# `timm` builds the backbone with `features_only`: we read the last three stages (strides 8, 16
# and 32) and, for the EfficientNet family, the 1x1 *head* convolution at stride 32 (1280
# channels for Lite0, 1792 for B4), which is the decoder's deepest input; for CNNs without a head
# the last stage plays that role. {numref}`fig-02a-stages` shows the mean absolute activation of
# each map for a pseudo-fake.

# %% tags=["hide-input"]
model.eval()
k = FAKES[0]
with torch.no_grad():
    stages = model.backbone(batch["image"][k:k + 1])  # the backbone normalises its input
names = ["stage"] * (len(stages) - 1) + ["head conv" if model.backbone.head is not None else "stage"]
fig, axes = plt.subplots(1, len(stages) + 1, figsize=(2.6 * (len(stages) + 1), 2.9))
show(axes[0], batch["image"][k], "pseudo-fake (input)")
for ax, f, s, name in zip(axes[1:], stages, model.backbone.info.strides, names):
    show(ax, f[0].abs().mean(0), f"{name}, stride {s}\n{f.shape[1]} ch, {f.shape[2]}x{f.shape[3]}", "viridis")
save(fig, "02a_stages")

# %% [markdown]
# ```{glue:figure} 02a_stages
# :name: fig-02a-stages
#
# The input and the mean absolute activation of the four backbone maps the decoder reads
# (ImageNet weights where the profile uses them, random otherwise).
# ```
#
# ## The E-FPN decoder
#
# The decoder climbs from stride 32 to stride 4. Its widths follow the backbone: for B4 the head
# map has 1792 channels and the stage maps 448, 160 and 56, so the decoder maps $y$ are
# 448, 160 and 56 channels wide, to be fused with the backbone map $x$ of the same stride and width:
#
# $$
# \mathrm{fuse}(y, x) = \big[\, y \;\big\|\; (1 - \sigma(y)) \odot x \,\big]
# $$
#
# (channel concatenation). Where the upsampled high-level feature already responds strongly, the
# low-level feature is suppressed; it passes where the high-level path is weak. This is what the
# paper calls limiting redundancy; the gate has no parameters. Stage by stage:
#
# 1. stride 32: conv 3x3 + BN + ReLU from the head map to $y_{32}$, fused with the last stage;
# 2. stride 16: conv 3x3 + BN + ReLU, then ConvTranspose (kernel 4, stride 2) + BN, fused with
#    the stride-16 stage;
# 3. stride 8: the same, fused with the stride-8 stage;
# 4. stride 4: an Inception block (1x1; 1x1 → 3x3; 1x1 → 5x5; max-pool → 1x1, concatenated),
#    then ConvTranspose + BN + ReLU: the fused map all heads read.
#
# `fpn="fpn"` replaces the gate by a plain concatenation and `fpn="none"` drops the lateral maps
# (a plain deconvolution stack); chapter 5 compares them. The shapes for this profile:

# %%
shapes = {}
hooks = [getattr(model.decoder, f"stage{i}").register_forward_hook(
    lambda m, i, o, n=f"stage{i}": shapes.__setitem__(n, tuple(o.shape[1:]))) for i in range(1, 5)]
with torch.no_grad():
    fused = model.features(batch["image"][k:k + 1])
for hook in hooks:
    hook.remove()
widths = list(model.backbone.info.channels[:3])[::-1]  # skips at strides 32, 16, 8
pd.DataFrame({
    "stride": [32, 16, 8, 4],
    "decoder map y (C, H, W)": list(shapes.values()),
    "skip x channels": widths + ["-"],
    "fused channels": [2 * c for c in widths] + [fused.shape[1]],
}, index=list(shapes))

# %% [markdown]
# ## A brief fit
#
# An untrained decoder says little, so we fit the model for a few steps on the 16 pairs above
# with the paper's losses (next section). This is **not** a trained detector: it over-fits 32
# images, only to show what each block and head is asked to produce. The full training, with
# held-out validation, is chapter 3.

# %%
untrained = copy.deepcopy(model).eval()
steps = PROFILE.demo.laanet_overfit_steps
weights = LAANetLossWeights()  # official SBI config: heatmap 100, consistency 100, cls 1
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
history = []
model.train()
images = batch["image"].contiguous(memory_format=torch.channels_last)
for step in range(steps):
    loss, parts = laanet_loss(model(images), batch, weights)
    opt.zero_grad()
    loss.backward()
    opt.step()
    history.append({"step": step, "total": loss.item(), **{k: v.item() for k, v in parts.items()}})
history = pd.DataFrame(history).set_index("step")
history.iloc[[0, len(history) // 2, -1]].round(4)

# %% [markdown]
# ## Gates and the fused map
#
# {numref}`fig-02a-gates` shows, for a pseudo-fake, the mean over channels of each gate
# $1 - \sigma(y)$ and of the fused stride-4 map, before and after the brief fit. At initialisation
# the decoder maps $y$ are batch-normalised values around 0, so the gates start close to one half
# (see the ranges in the titles): the skip passes at about half strength everywhere, with the
# checkerboard of untrained transposed convolutions. (At stride 32, $y$ comes straight out of a ReLU, so that gate
# never exceeds one half.) Training moves the gates apart, and where they drop the backbone's
# detail is suppressed in favour of the decoder's own map. A fit this short shows the mechanism,
# not what a trained model's gates look like.

# %% tags=["hide-input"]
fig, axes = plt.subplots(2, 5, figsize=(13, 5.8))
k = FAKES[0]
for row, (net, when) in zip(axes, [(untrained, "untrained"), (model.eval(), "after the brief fit")]):
    gates: list = []
    with torch.no_grad():
        fused = net.features(batch["image"][k:k + 1], gates)
    show(row[0], batch["image"][k], f"pseudo-fake\n({when})")
    for ax, g, s in zip(row[1:4], gates, (32, 16, 8)):
        g = g[0].mean(0)
        show(ax, g, f"mean gate, stride {s}\n(range {g.min():.3f} to {g.max():.3f})", "coolwarm")
    show(row[4], fused[0].abs().mean(0), f"fused map, stride 4\n{fused.shape[1]} ch, mean |.|", "viridis")
save(fig, "02a_gates")

# %% [markdown]
# ```{glue:figure} 02a_gates
# :name: fig-02a-gates
#
# E-FPN gates $1 - \sigma(y)$ (mean over channels; each panel on its own colour scale, blue =
# low = the skip is suppressed, range in the title) and the fused map, for the untrained model
# (top) and after the brief fit (bottom).
# ```
#
# ## The three heads
#
# All three heads read the fused stride-4 map; their stems are conv 3x3 + BN + ReLU to 64 channels:
#
# - **classification**: global average pooling and a linear layer to one logit (the paper
#   classifies the high-resolution fused map, not the backbone's top). Inference uses this head
#   only (`model.predict_proba`, which applies the sigmoid), so the other two cost nothing at
#   test time: 13.9 instead of 16.6 GFLOPs for B4.
# - **heatmap**: a 1x1 convolution to one channel whose bias starts at $-2.19$ (CenterNet's prior,
#   $\sigma(-2.19) = 0.1$), trained to find the vulnerable points.
# - **self-consistency**: a 1x1 convolution to a 256-d embedding $e_p$ per pixel. With the anchor
#   $a$ = the argmax of the consistency *target*, the predicted map is
#   $\hat C_p = \sigma(\langle e_a, e_p \rangle / \sqrt{256})$: how much pixel $p$ resembles the
#   anchor. Because the anchor comes from the label, this branch exists only in training.

# %% tags=["hide-input"]
model.eval()
with torch.no_grad():
    out = model(batch["image"])
    cons = consistency_map(out.embedding, batch["consistency"])
    prob = torch.sigmoid(out.cls)
fig, axes = plt.subplots(len(SHOWN), 5, figsize=(12, 2.5 * len(SHOWN)))
for row, k in zip(axes, SHOWN):
    kind = "fake" if batch["label"][k] else "real"
    show(row[0], batch["image"][k], f"{kind}: P(fake) = {prob[k]:.2f}")
    show(row[1], batch["heatmap"][k, 0], "heatmap target", "magma", 0, 1)
    show(row[2], torch.sigmoid(out.heatmap[k, 0]), "heatmap predicted", "magma", 0, 1)
    show(row[3], batch["consistency"][k, 0], "consistency target", "magma", 0, 1)
    show(row[4], cons[k, 0], "consistency predicted", "magma", 0, 1)
save(fig, "02a_heads")

# %% [markdown]
# ```{glue:figure} 02a_heads
# :name: fig-02a-heads
#
# The three heads after the brief fit on 16 pairs (not a trained detector): classification
# probability, heatmap of vulnerable points and self-consistency map, each beside its target.
# Real images have all-zero targets; for them the anchor is pixel (0, 0).
# ```
#
# After so few steps the heads are far from their targets, and how far each one gets says little
# about a trained model. What the figure does show is the coupling: all three heads read the same
# fused map, so the heatmap loss (weight 100, normalised by a handful of positive pixels) shapes
# the features the consistency embedding is built from; a consistency map that lights up the
# vulnerable points before the whole boundary is that coupling at work.
#
# ## The losses
#
# With $p = \sigma(\hat y)$ the predicted heatmap, the heatmap loss is the modified focal loss of
# CornerNet/CenterNet {cite:p}`zhou2019centernet`, normalised by the number $N_{pos}$ of positive
# pixels (target exactly 1) in the batch:
#
# $$
# L_{hm} = -\frac{1}{N_{pos}} \sum_{xy}
# \begin{cases}
# (1 - p)^2 \log p & y = 1 \\
# (1 - y)^4\, p^2 \log (1 - p) & \text{otherwise}
# \end{cases}
# $$
#
# The consistency loss $L_c$ is binary cross-entropy between $\hat C$ and its target (mean over
# pixels), $L_{cls}$ binary cross-entropy on the label, and
#
# $$
# L = \lambda_{hm} L_{hm} + \lambda_c L_c + \lambda_{cls} L_{cls}.
# $$
#
# For real images the consistency target is 0 everywhere, also at the anchor, whose
# self-similarity $\sigma(\lVert e_a \rVert^2 / 16) \ge 0.5$: $L_c$ has a floor there, as in the
# official code. The official code also scales the positive focal term by 0.72 ("label
# smoothing"). The paper's $\lambda$ values are not in our notes; the defaults follow the official
# SBI config, and {numref}`tbl-02a-weights` lists the alternatives, all available as
# `LAANetLossWeights`.

# %% tags=["hide-input"]
loss_table = pd.DataFrame(
    [vars(w) for w in (LAANetLossWeights(), OFFICIAL_SBI_WEIGHTS, OFFICIAL_BI_WEIGHTS)],
    index=["dfattn default", "official SBI config", "official BI config / released checkpoint"],
)
glue("tbl-02a-weights", loss_table, display=False)
loss_table

# %% [markdown]
# ```{glue:figure} tbl-02a-weights
# :name: tbl-02a-weights
#
# Loss weights ($\lambda_{hm}$, $\lambda_c$, $\lambda_{cls}$ and the factor of the positive focal
# term): ours, and those of the official configs.
# ```
#
# ## Paper and code
#
# Where the paper and the official code differ, `dfattn` follows the paper and offers the code's
# variant as an option:
#
# | choice | `dfattn` default | official code (option here) |
# |---|---|---|
# | Inception block's 1x1 convolutions | four, one per branch (paper) | one shared by all branches (`shared_inception_conv=True`) |
# | input normalisation | the backbone's ImageNet mean/std | mean = std = 0.5 for AdvProp weights (`normalization="half"`) |
# | positive focal term | weight 1 (CenterNet) | weight 0.72, "label smoothing" (`label_smoothing=0.72`) |
# | loss weights $\lambda_{hm}, \lambda_c, \lambda_{cls}$ | 100, 100, 1 (SBI config; paper's values unconfirmed) | 10, 100, 1 (BI config, released checkpoint's name) |
# | precision | float32 (bf16 autocast on GPU) | float64 |
# | consistency target of real images | all zeros (as the code) | all zeros |
# | fusion ablations | `fpn="efpn"` | `fpn="fpn"` (code's `tfpn`), `fpn="none"` |
#
# ## Size and cost
#
# {numref}`tbl-02a-params` counts parameters and FLOPs (torch's `FlopCounterMode`, 2 FLOPs per
# multiply-add) per component, for the paper's B4 at 384 px and for the sizes of the `cpu` and
# `smoke` profiles. Counting needs only shapes, so the models are built on PyTorch's `meta`
# device: no weights, no compute. The B4 model matches the official one: 27.13 M parameters with
# the code's shared Inception convolution (ours has four, 9.6 k more) and 16.6 GFLOPs, of which
# the backbone takes 8.8.

# %%
rows = []
for name, backbone, size in [("paper (B4)", "efficientnet_b4", 384),
                             ("cpu profile", "efficientnet_lite0", 128),
                             ("smoke profile", "efficientnet_lite0", 64)]:
    with torch.device("meta"):
        m = LAANet(LAANetConfig(backbone=backbone)).eval()
    x = torch.empty(1, 3, size, size, device="meta")
    total, parts = count_flops(m, x)
    cls_only, _ = count_flops(m, x, lambda mm, x: mm(x, heads=("cls",)))
    setting = f"{name}, {size} px"
    for component, child in m.named_children():
        if count_parameters(child):
            rows.append({"setting": setting, "component": component,
                         "parameters (M)": count_parameters(child) / 1e6, "GFLOPs": parts[component] / 1e9})
    rows.append({"setting": setting, "component": "total (3 heads, training)",
                 "parameters (M)": count_parameters(m) / 1e6, "GFLOPs": total / 1e9})
    unused = count_parameters(m.heatmap_head) + count_parameters(m.consistency_head)
    rows.append({"setting": setting, "component": "inference path (cls only)",
                 "parameters (M)": (count_parameters(m) - unused) / 1e6, "GFLOPs": cls_only / 1e9})
size_table = pd.DataFrame(rows).set_index(["setting", "component"]).round(3)
save_table(size_table, "02a_params_flops", FIG)
glue("tbl-02a-params", size_table, display=False)
size_table

# %% [markdown]
# ```{glue:figure} tbl-02a-params
# :name: tbl-02a-params
#
# Parameters and FLOPs of LAA-Net per component (per image).
# ```
#
# On an idle 2-core CPU, `benchmarks/bench_laanet.py --compile all` times the B4 model at 384 px,
# batch 4, in float32 (`benchmarks/results/cpu2_laanet_idle.txt`): 0.85 training images per second
# eager, 0.94 with the channels-last memory layout, and **1.15 with channels-last and
# `torch.compile`**, which fuses BatchNorm, SiLU and the other element-wise work into fewer passes
# over memory; forward passes: 4.5 eager, 5.7 compiled, 6.4 on the compiled inference path. Against
# the official code on the same kind of machine (0.85 training and 3.0 forward images per second)
# that is 1.36x for training and 2.1x for inference. The same run timed timm's B4 classifier alone
# at 1.51 training images per second against 1.25 where the official code was measured, so part of
# that margin is the machine: rescaled by it, the compiled training step is 1.12x the official code.
# What helped: computing only the classification head at inference (13.9 instead of 16.6 GFLOPs),
# channels-last (about 10 % for training, nothing for the forward pass on an idle machine) and
# compilation (another 20 % for training, 30-50 % for the forward pass). Compiling B4 takes about 5
# minutes on 2 cores, so it pays off in long training runs only: `dfattn-train --compile`
# (`TrainConfig.compile`) compiles the model's blocks in place. What did not help: merging the three
# heads' first convolutions into one (no faster on CPU). In the eager profile of a training step
# (`torch.profiler`) about 60 % of the time is convolutions and their gradients (1x1, depthwise and
# dense convolutions in similar shares) and about 30 % BatchNorm, SiLU and other element-wise work,
# which is what compilation fuses away.
#
# ## Summary
#
# - LAA-Net = ImageNet EfficientNet + E-FPN decoder to stride 4 + three heads. Any timm CNN works
#   as the backbone; EfficientNet-family models also feed their 1x1 head convolution to the
#   decoder, as the paper's B4 does, and the decoder's widths follow the backbone's.
# - The E-FPN gate $1 - \sigma(y)$ lets low-level detail through only where the high-level decoder
#   map is weak, at no parameter cost; `fpn="fpn"` (no gate) and `fpn="none"` (no lateral maps)
#   are the ablations.
# - The heatmap head learns the vulnerable points of the blending boundary with the focal loss; the
#   consistency head learns an embedding in which boundary pixels resemble the anchor point. Both
#   only shape the features during training: inference runs the classifier alone, and
#   `predict_proba` returns a probability, not a raw logit.
# - The B4 model has the official size (27.1 M parameters, 16.6 GFLOPs at 384 px, 13.9 for
#   inference); paper-vs-code choices are options, listed above.
