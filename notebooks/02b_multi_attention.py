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
# # Multi-attentional deepfake detection (MAT)
#
# MAT {cite:p}`zhao2021mat` treats deepfake detection as *fine-grained classification*: the
# difference between a real and a fake face is subtle and local, like the difference between two
# bird species, so the network should look at several regions at once and read fine texture
# there. On an EfficientNet-B4 {cite:p}`tan2019efficientnet` backbone it adds
#
# 1. an **attention module** that turns a deep layer into $M$ spatial attention maps;
# 2. **textural feature enhancement** (TFE): the high-frequency residual of a shallow layer,
#    enhanced by densely connected convolutions;
# 3. **bilinear attention pooling** (BAP): one texture vector per attention map, plus a
#    *global* feature pooled from a deep layer with the summed map;
# 4. the **regional independence loss** (RIL), which keeps the $M$ maps on different regions;
# 5. **attention-guided data augmentation** (AGDA), which blurs the most attended region so that
#    the network has to find evidence elsewhere.
#
# This chapter builds each block from `dfattn.models.mat` and `dfattn.models.agda`, shows what it
# does on the pseudo-fakes of {doc}`01_data_synthesis`, trains small models with and without the
# RIL to see what it changes, and counts parameters and FLOPs.
#
# **Paper or released code?** The official code differs from the paper in many places (attention
# head, texture block, RIL margins and centre update, loss weights, AGDA details, an extra "match"
# loss and a two-stage schedule). Our defaults follow the paper; `MATConfig.official()` switches
# every difference to the code's choice at once, and each one is also a separate field:
#
# | block | paper (default) | released code (`MATConfig.official()`) | field |
# |---|---|---|---|
# | attention head | 1x1 conv, BN, ReLU | 3x3 conv, BN, ReLU, 1x1 conv, BN, ELU + 1, border mask | `attention_head` |
# | TFE | residual against local average pooling, one shared 3-layer dense block | 3x3 conv first, residual gated by $\tanh(A_k)$, one dense block per head | `texture_block` |
# | classifier | one linear layer on $[P, G]$ | hard-swish MLPs | `classifier` |
# | dropout | none | whole heads ($p = 0.25$), $G$ ($p = 0.5$) | `head_dropout`, `global_dropout` |
# | RIL | squared per-head distances, margins 0.05 / 0.1 and 0.2, centres from all samples, weight 1 | Frobenius distance, margins 0.2 / −0.8 and 0.8, centres from real faces, inter term $/ (M\alpha)$, weight 0.5 | `ril`, `inner_margins`, `inter_margin`, `ril_weight` |
# | AGDA | random head, min-max normalised, scale 0.3, $\sigma = 7$ | head $\propto \sqrt{1 + \text{mass}}$, soft threshold, scale 0.5, 11x11 kernel, noise; match loss 0.1 | `agda`, `match_weight` |
# | schedule | MAT from the start | 20 epochs of plain EfficientNet-B4 first | `pretrain_epochs` |
#
# Both variants run through every section below.

# %% tags=["parameters"]
profile = None  # smoke | cpu | gpu; None: $DFATTN_PROFILE, else auto
seed = 0

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from myst_nb import glue

from dfattn.config import figures_dir, get_device, profile_from_env, seed_everything
from dfattn.data.datasets import PseudoFakePairs, collate_pairs
from dfattn.data.synthetic import SyntheticFaces
from dfattn.diversity import train_tiny
from dfattn.models.agda import AGDAConfig, agda_degrade, attention_guided_augmentation
from dfattn.models.mat import MAT, MATConfig, bilinear_attention_pooling, create_mat
from dfattn.models.flops import count_flops, count_parameters
from dfattn.plotting import save_figure, save_table, show, show_heat

PROFILE = profile_from_env(profile)  # the one read of $DFATTN_PROFILE / $DFATTN_PRETRAINED
FIG = figures_dir(PROFILE)
DEVICE = get_device()
seed_everything(seed)
SIZE = PROFILE.train.image_size
print(f"profile {PROFILE.name}: {PROFILE.train.backbone} at {SIZE} px on {DEVICE}")


def save(fig, name):
    save_figure(fig, name, FIG)


def to_image(x):
    """(3, H, W) tensor in [0, 1] -> (H, W, 3) array."""
    return x.detach().cpu().permute(1, 2, 0).clamp(0, 1).numpy()


# %% [markdown]
# ## Data: pseudo-fakes
#
# MAT was trained on real deepfakes (FaceForensics++); here it sees what chapter 1 makes: real
# synthetic faces and their self-blended pseudo-fakes, in pairs, at the profile's image size. A
# training pool and a held-out batch of other identities:

# %%
n_train = min(48, PROFILE.train.n_train)
n_test = min(8, PROFILE.train.n_test)
train_pairs = PseudoFakePairs(SyntheticFaces(n_train, 160, seed=seed), SIZE, train=True, seed=seed)
test_pairs = PseudoFakePairs(SyntheticFaces(n_test, 160, seed=seed, first_identity=10_000), SIZE,
                             train=False, seed=seed)
pool = collate_pairs([train_pairs[i] for i in range(len(train_pairs))])
held_out = collate_pairs([test_pairs[i] for i in range(len(test_pairs))])
print(f"training pool {tuple(pool['image'].shape)}, held-out batch {tuple(held_out['image'].shape)}")

# %% [markdown]
# ## Backbone and the two layers
#
# MAT reads two layers of the backbone: a shallow one, $SL_t$, for texture, and a deeper one,
# $SL_a$, for attention, plus the final feature map for the global feature. The paper's ablation
# picked the end of EfficientNet stage 2 for $SL_t$ and the end of stage 5 for $SL_a$. We tap timm's
# feature levels (`texture_stage=1`, `attention_stage=3`, selectable), so any EfficientNet works:
# the profile's backbone here, B4 at 380 px for the paper's setting. The table lists the shapes for
# one image (B4 on PyTorch's `meta` device: shapes without computation):

# %%
def on_meta(config: MATConfig) -> MAT:
    """The model on PyTorch's meta device: shapes, parameter counts and FLOPs, no memory, no time."""
    with torch.device("meta"):
        return MAT(config).eval()


def tap_shapes(config: MATConfig, size: int) -> dict[str, tuple]:
    model = on_meta(config)
    with torch.no_grad():
        f_t, f_a, f_g = model.taps(torch.empty(1, 3, size, size, device="meta"))
        out = model(torch.empty(1, 3, size, size, device="meta"))
    return {"SL_t (texture)": tuple(f_t.shape[1:]), "SL_a (attention)": tuple(f_a.shape[1:]),
            "final": tuple(f_g.shape[1:]), "attention A": tuple(out.attention.shape[1:]),
            "textural P": tuple(out.textural.shape[1:]), "global G": tuple(out.global_feature.shape[1:])}


shapes = pd.DataFrame({
    f"{PROFILE.train.backbone}, {SIZE} px": tap_shapes(MATConfig(backbone=PROFILE.train.backbone), SIZE),
    "efficientnet_b4, 380 px": tap_shapes(MATConfig(backbone="efficientnet_b4"), 380),
    "B4 380 px, official": tap_shapes(MATConfig.official(backbone="efficientnet_b4"), 380),
})
shapes

# %% [markdown]
# (timm's B4 gives 24 x 24 and 12 x 12 grids at 380 px where the official code's EfficientNet port
# gives 23 x 23 and 11 x 11: it computes "same" padding for a 380 px input in every block. Nothing
# changes conceptually.)
#
# ## Textural feature enhancement
#
# Shallow features mix texture with low-frequency content (colour, shading). TFE separates the two
# with *local average pooling*: $D$ is $f_{SL_t}$ averaged down to the attention grid (windows of
# about 4 x 4), and the residual
#
# $$
# T = f_{SL_t} - \operatorname{up}(D)
# $$
#
# keeps what changes within a window. A densely connected block of three 3x3 convolutions (each
# seeing all earlier outputs) enhances $T$ into the textural feature map $F$. $D$ itself is not
# thrown away: the RIL uses it below. The figure shows the channel-averaged magnitudes for a real
# face and its pseudo-fake, and where the two differ (ImageNet weights where the profile has them).

# %%
torch.manual_seed(seed)
model = create_mat(backbone=PROFILE.train.backbone, pretrained=PROFILE.train.pretrained).eval()
pair = held_out["image"][:2]  # a real face and its self-blended fake
with torch.no_grad():
    f_t, f_a, f_g = model.taps(pair)
    texture, local_mean = model.texture.residual(f_t, f_a.shape[-2:])
    enhanced, _ = model.texture(f_t, model.attention(f_a))
print(f"f_SLt {tuple(f_t.shape)} -> D {tuple(local_mean.shape)}, T {tuple(texture.shape)}, "
      f"F {tuple(enhanced.shape)}")

# %% tags=["hide-input"]
def magnitude(x):
    return x.abs().mean(0).cpu().numpy()


fig, axes = plt.subplots(2, 5, figsize=(12, 5.2))
for row, name in enumerate(["real", "fake"]):
    show(axes[row, 0], to_image(pair[row]), name)
    show(axes[row, 1], magnitude(f_t[row]), "|f_SLt|", cmap="magma")
    up = F.interpolate(local_mean[row : row + 1], size=f_t.shape[-2:], mode="nearest")[0]
    show(axes[row, 2], magnitude(up), "|up(D)|: local average", cmap="magma")
    show(axes[row, 3], magnitude(texture[row]), "|T|: texture residual", cmap="magma")
show(axes[0, 4], held_out["mask"][1, 0].numpy(), "blend mask of the fake", cmap="gray", vmin=0, vmax=1)
show(axes[1, 4], magnitude(texture[1] - texture[0]), "|T(fake) - T(real)|", cmap="magma")
save(fig, "02b_texture")

# %% [markdown]
# ```{glue:figure} 02b_texture
# :name: fig-02b-texture
#
# Textural feature enhancement on a real face (top) and its self-blended fake (bottom):
# channel-averaged magnitudes of the shallow feature map, of its local average $D$ and of the
# residual $T$. Bottom right: where the residuals of the pair differ, next to the blend mask.
# ```
#
# The local average carries the coarse layout; the residual keeps edges and fine texture, and the
# difference between the pair's residuals lies where the blend changed the face
# ({numref}`fig-02b-texture`). The paper enhances $T$ with one dense block shared by all heads
# ($C_F = 4 C_t$ channels); the official code first gates $T$ with $\tanh$ of each attention map and
# gives each head its own dense block, which at stride 4 costs more than the rest of the MAT heads
# together (see the FLOP table at the end).
#
# ## Attention, bilinear attention pooling and the global feature
#
# The attention module maps $f_{SL_a}$ to $M$ non-negative maps $A_k$ (paper: a 1x1 convolution,
# BN and ReLU). Bilinear attention pooling collects, for every map, the texture under it,
#
# $$
# P_k = \frac{\sum_{h,w} A_k(h,w)\, F(:,h,w)}{\left\lVert \sum_{h,w} A_k(h,w)\, F(:,h,w) \right\rVert_2},
# $$
#
# the paper's *normalised average pooling*: dividing by the norm makes $P_k$ independent of how
# strong the attention is. The maps are summed into one, which pools the final feature map into
# the global feature $G$ (an attention-weighted mean), and a classifier reads $[P_1 \dots P_M, G]$.

# %%
with torch.no_grad():
    attention = model.attention(f_a)  # (B, M, H_a, W_a)
    P = bilinear_attention_pooling(enhanced, attention, "l2")  # (B, M, C_F)
    G = bilinear_attention_pooling(f_g, attention.sum(1, keepdim=True), "mean")[:, 0]  # (B, C_g)
print(f"A {tuple(attention.shape)}, P {tuple(P.shape)} with |P_k| = "
      f"{P.norm(dim=-1).mean():.3f}, G {tuple(G.shape)}")

# %% [markdown]
# ## Regional independence loss
#
# Nothing in the classification loss stops the $M$ maps from all looking at the same region. The
# RIL pools the *pooled* map $D$ (not the residual) with each attention map into a semantic feature
# $V_k^i$ of image $i$, keeps one feature centre $c_k$ per map, and asks that every image's $V_k$
# stays near its centre (each map looks at the *same kind* of region in every face), while the
# centres stay apart (different maps look at different regions):
#
# $$
# \mathcal{L}_{RIL} = \frac{1}{B}\sum_{i} \sum_{k} \max\!\left(\lVert V_k^i - c_k\rVert_2^2 - m_{in}(y_i),\, 0\right)
# + \sum_{j \ne k} \max\!\left(m_{out} - \lVert c_j - c_k\rVert_2^2,\, 0\right).
# $$
#
# The centres are not learned by gradient descent but follow the batches by a moving average,
# $c \leftarrow c + \alpha \frac{1}{B}\sum_i (V^i - c)$, with $\alpha = 0.05$ decaying by 0.9 per
# epoch. Fakes get a looser inner margin ($m_{in} = 0.1$ against 0.05 for real faces, their texture
# varies more), $m_{out} = 0.2$, and the total loss is $\mathcal{L}_{CE} + \mathcal{L}_{RIL}$. (The
# paper sums over the batch; we average so that the weight does not depend on the batch size.) The
# loss uses the *updated* centres, which depend on the batch through $\alpha$: that is what gives
# the inter-centre term a gradient, as in the official code. That gradient passes through the
# centre update, so it carries a factor $\alpha$: at $\alpha = 0.05$ it is about 3 % of the intra
# term's, and the inter term does little. The official code divides its inter term by $M\alpha$;
# `ril_inter_scale="official"` does the same to the paper's term (off by default: the paper's sum).
# Under DDP the centre update is averaged over the processes. The centres are buffers of the model
# (saved in checkpoints), updated only in training mode; `model.set_epoch(e)` decays $\alpha$.
#
# The official code is quite different: real faces only move the centres, one Frobenius distance
# over all heads replaces the per-head distances, the fake margin is *negative* (−0.8: fakes are
# pushed at least 0.8 away from the real centres, a one-class design), the inter term uses plain
# distances with $m_{out} = 0.8$ and is divided by $M\alpha$, and the weight is 0.5. At
# initialisation that term alone is about 24 against a cross-entropy of 0.69.
#
# ### What the RIL changes
#
# We train four small models from the same initialisation on the same batches: paper and official
# variant, each with and without the RIL (no AGDA, to isolate the loss), and follow on the held-out
# batch (other identities) two measures of how much the $M$ heads overlap:
#
# - **map overlap**: each map normalised to sum 1, the histogram intersection
#   $\sum_{h,w} \min(\hat A_j, \hat A_k)$ (1 = identical maps, 0 = disjoint), averaged over pairs
#   of maps and images;
# - **feature similarity**: the cosine between the semantic features $V_j$ and $V_k$ of one image,
#   averaged the same way.

# %%
STEPS, BATCH = PROFILE.demo.ril_steps, PROFILE.demo.ril_batch
EVAL_EVERY = max(1, STEPS // 6)


def run(variant: str, with_ril: bool):
    """One small MAT run: `dfattn.diversity.train_tiny` (both measures are in `dfattn.diversity`;
    Adam at lr 1e-3, no AGDA, the same initialisation and batches for every model)."""
    return train_tiny(variant, with_ril, pool["image"], pool["label"], held_out["image"], steps=STEPS,
                      batch=BATCH, seed=seed, backbone=PROFILE.train.backbone,
                      pretrained=PROFILE.train.pretrained, device=DEVICE, eval_every=EVAL_EVERY)


start = time.perf_counter()
runs = {(variant, ril): run(variant, ril) for variant in ("paper", "official") for ril in (False, True)}
print(f"4 models x {STEPS} steps, batch {BATCH}, {SIZE} px: {time.perf_counter() - start:.0f} s")
summary = pd.DataFrame({
    f"{variant}, {'with' if ril else 'without'} RIL": history.iloc[-1][["ce", "map overlap", "feature similarity"]]
    for (variant, ril), (_, history) in runs.items()
}).T.round(3)
for (variant, ril), (_, history) in runs.items():
    for column in ("map overlap", "feature similarity"):
        name = f"ril_{variant}_{'with' if ril else 'no'}_{column.split()[0]}"
        glue(name, float(history.iloc[-1][column]), display=False)
summary

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
styles = {("paper", False): ("C0", "--"), ("paper", True): ("C0", "-"),
          ("official", False): ("C3", "--"), ("official", True): ("C3", "-")}
for (variant, ril), (_, history) in runs.items():
    colour, line = styles[variant, ril]
    label = f"{variant}, {'with' if ril else 'no'} RIL"
    for ax, column in zip(axes, ["map overlap", "feature similarity", "ce"]):
        ax.plot(history["step"], history[column], line, color=colour, label=label, marker="o", ms=3)
for ax, title in zip(axes, ["map overlap (held-out)", "feature similarity of heads (held-out)",
                            "training cross-entropy"]):
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
axes[0].legend(fontsize=8)
save(fig, "02b_ril_overlap")

# %% [markdown]
# ```{glue:figure} 02b_ril_overlap
# :name: fig-02b-ril-overlap
#
# Four small MATs trained from the same initialisation on the same batches, with (solid) and
# without (dashed) the regional independence loss, for the paper's (blue) and the official (red)
# settings. Left: overlap of the $M$ attention maps on held-out faces; middle: cosine between the
# heads' semantic features; right: the training cross-entropy.
# ```
#
# In these runs ({numref}`fig-02b-ril-overlap`) the RIL separates the heads' semantic *features*
# in both variants: after the last step the mean cosine between two heads' features is
# {glue:text}`ril_paper_with_feature:.2f` with the paper's loss against
# {glue:text}`ril_paper_no_feature:.2f` without it, and {glue:text}`ril_official_with_feature:.2f`
# with the official loss (which pushes the heads to opposite directions) against
# {glue:text}`ril_official_no_feature:.2f` without. The attention *maps* follow much less: with the
# official settings their overlap ends at {glue:text}`ril_official_with_map:.2f` against
# {glue:text}`ril_official_no_map:.2f` without the loss, with the paper's at
# {glue:text}`ril_paper_with_map:.2f` against {glue:text}`ril_paper_no_map:.2f`.
#
# Two reasons. The paper's inter-centre margin is weak: 0.2 on *squared* distances is met by unit
# vectors about 26 degrees apart, so once the centres differ that much only the intra term (each
# head consistent across faces) acts; the official margin (0.8 on plain distances, about 47
# degrees, with a gradient scaled by $1 / (M\alpha)$) keeps pushing. And both act on features
# pooled from the *low-level* map $D$: two regions of similar texture give similar features, so
# separated features do not require disjoint maps, and disjoint maps do not guarantee separated
# features. These are short runs on synthetic faces with one seed (in the other seeds and sizes we
# tried, the feature separation was consistent and the map effect was not): they show what the
# loss does mechanically, not what it is worth on real deepfakes, where independent reproductions
# found no gain of MAT over its plain backbone.
#
# The maps of the two models trained with the RIL, on held-out faces:

# %% tags=["hide-input"]
m = runs["paper", True][0].config.num_attentions
rows = [(variant, i) for variant in ("paper", "official") for i in (0, 1)]  # a real face, its fake
fig, axes = plt.subplots(len(rows), 1 + m, figsize=(2.0 * (1 + m), 2.1 * len(rows)))
for r, (variant, i) in enumerate(rows):
    net = runs[variant, True][0].eval()
    image = held_out["image"][i]
    with torch.no_grad():
        maps = net(image[None].to(DEVICE)).attention[0].cpu()
    kind = "fake" if held_out["label"][i] else "real"
    show(axes[r, 0], to_image(image), f"{variant}: {kind}")
    for k in range(m):
        show_heat(axes[r, k + 1], image, maps[k], f"A_{k + 1}")
save(fig, "02b_attention_maps")

# %% [markdown]
# ```{glue:figure} 02b_attention_maps
# :name: fig-02b-attention-maps
#
# The $M = 4$ attention maps of the paper (top two rows) and official (bottom two rows) models
# trained with the RIL, on a held-out real face and its pseudo-fake. Each map is scaled to its own
# maximum.
# ```
#
# ## Attention-guided data augmentation
#
# The maps also drive the augmentation. For every training image AGDA picks one map, normalises it
# to $A^* \in [0, 1]$ at image size, degrades the image (down-scale by 0.3, Gaussian blur with
# $\sigma = 7$, up-scale back: $I_d$) and blends
#
# $$
# I' = I \odot (1 - A^*) + I_d \odot A^*.
# $$
#
# Where the map is zero the image is unchanged, bit for bit (a test checks it). The batch is
# augmented in one vectorised call, and a `torch.Generator` makes it reproducible. As in the
# official code, `training_step` trains on the augmented batch in a *second* forward pass (the
# cross-entropy on it has weight 1), which roughly doubles the cost of a step. The official
# variant picks heads with probability $\propto \sqrt{1 + \text{mass}}$, divides by the maximum
# only, sharpens $A^*$ with a random soft threshold, down-scales by 0.5 and adds noise, and adds a
# "match" loss: the semantic features of the heads that AGDA did not touch should not move.

# %%
net = runs["paper", True][0].eval()
images = held_out["image"][:3].to(DEVICE)
with torch.no_grad():
    maps = net(images).attention
paper_aug = attention_guided_augmentation(images, maps, AGDAConfig(), torch.Generator(DEVICE).manual_seed(seed))
official_aug = attention_guided_augmentation(images, maps, AGDAConfig.official(),
                                             torch.Generator(DEVICE).manual_seed(seed))
degraded = agda_degrade(images, AGDAConfig())
unchanged = (paper_aug.weight == 0).expand_as(images)
print(f"heads chosen (paper): {paper_aug.head.tolist()}; pixels where A* = 0: "
      f"{unchanged.float().mean():.0%}, all equal there: {torch.equal(paper_aug.image[unchanged], images[unchanged])}")

# %% tags=["hide-input"]
fig, axes = plt.subplots(3, 8, figsize=(15, 6.0))
for r in range(3):
    show(axes[r, 0], to_image(images[r]), "image I")
    show(axes[r, 1], to_image(degraded[r]), "degraded I_d")
    for c, (name, aug) in enumerate([("paper", paper_aug), ("official", official_aug)]):
        show(axes[r, 2 + 3 * c], aug.weight[r, 0].cpu().numpy(), f"A* {name} (head {int(aug.head[r]) + 1})",
             cmap="gray", vmin=0, vmax=1)
        show(axes[r, 3 + 3 * c], to_image(aug.image[r]), f"I' ({name})")
        show(axes[r, 4 + 3 * c], (aug.image[r] - images[r]).abs().mean(0).cpu().numpy(), "|I' - I|",
             cmap="magma", vmin=0, vmax=0.25)
save(fig, "02b_agda")

# %% [markdown]
# ```{glue:figure} 02b_agda
# :name: fig-02b-agda
#
# AGDA on three held-out faces with the maps of the paper model trained with the RIL: the degraded
# image (paper settings), then for the paper's and the official settings the chosen normalised map
# $A^*$, the augmented image and its absolute difference from the original (official: soft
# threshold, scale 0.5, noise).
# ```
#
# ## The two-stage schedule of the official code
#
# The released experiment first trains a plain EfficientNet-B4 classifier for 20 epochs and only
# then the full MAT, initialised from it (the author's answer to users who could not make MAT
# converge). `pretrain_epochs` reproduces it; the trainer asks the model which losses and
# parameters are active at each epoch. The moving-average rate $\alpha$ restarts with the MAT stage.

# %%
official = on_meta(MATConfig.official(backbone=PROFILE.train.backbone))
pd.DataFrame([
    {"epoch": e, "stage": s.name, "epoch in stage": s.epoch, **s.loss_weights,
     "trained": ", ".join(s.modules),
     "parameters (M)": round(sum(p.numel() for n in official.trainable(e) for p in getattr(official, n).parameters()) / 1e6, 2)}
    for e in (0, 19, 20, 21) for s in [official.stage(e)]
]).set_index("epoch")

# %% [markdown]
# ## Parameters and FLOPs
#
# FLOPs of one forward pass of one image, counted with `dfattn.models.flops` (PyTorch's
# `FlopCounterMode`, here on the `meta` device; a multiply-add counts as 2 FLOPs, convolutions and
# matrix products only, as usual). The stage-1 classifier of the official schedule is left out.

# %%
rows = []
for setting, backbone, size in [("paper scale", "efficientnet_b4", 380),
                                 ("cpu profile", "efficientnet_lite0", 128),
                                 ("smoke profile", "efficientnet_lite0", 64)]:
    for variant in ("paper", "official"):
        config = MATConfig(backbone=backbone)
        net = on_meta(MATConfig.official(backbone=backbone) if variant == "official" else config)
        total, body = count_parameters(net), count_parameters(net.backbone)
        stage1 = count_parameters(net.plain_head) if net.plain_head is not None else 0
        flops, per_block = count_flops(net, torch.empty(1, 3, size, size, device="meta"))
        rows.append({"setting": setting, "backbone": backbone, "px": size, "variant": variant,
                     "params (M)": round((total - stage1) / 1e6, 3),
                     "backbone params (M)": round(body / 1e6, 3),
                     "MAT blocks params (M)": round((total - body - stage1) / 1e6, 3),
                     "GFLOPs": round(flops / 1e9, 3),
                     "backbone GFLOPs": round(per_block["backbone"] / 1e9, 3),
                     "texture block GFLOPs": round(per_block["texture"] / 1e9, 3)})
table = pd.DataFrame(rows)
b4 = table[table.px == 380].set_index("variant")
for variant in ("paper", "official"):
    glue(f"b4_{variant}_params", float(b4.loc[variant, "params (M)"]), display=False)
    glue(f"b4_{variant}_gflops", float(b4.loc[variant, "GFLOPs"]), display=False)
    extra = b4.loc[variant, "GFLOPs"] / b4.loc[variant, "backbone GFLOPs"] - 1
    glue(f"b4_{variant}_extra_flops", float(100 * extra), display=False)
save_table(table, "02b_params_flops", FIG, index=False)
table

# %% [markdown]
# The backbone dominates the parameters in both variants (the official code's model was measured
# at 18.83 M parameters, of which 17.55 M are the backbone plus its unused classifier; our
# official variant has the same count with the stage-1 classifier, 18.82 M without it). In compute
# the variants differ: at 380 px the MAT blocks add {glue:text}`b4_paper_extra_flops:.0f` % to the
# backbone's FLOPs with the paper's shared texture block, and {glue:text}`b4_official_extra_flops:.0f` %
# with the official one, which runs four dense blocks (one per head) at stride 4.
#
# `benchmarks/bench_mat.py` measures the speed. On the 2-core CPU machines of this project (shared
# with other jobs, so the numbers are pessimistic; best of 3 in each of three runs), B4 at 380 px
# with batch 4 and the paper settings in `channels_last` ran the forward pass at 1.8-2.0x the
# official code's throughput (5.1-5.5 images/s against 2.8), a training step at 1.4-1.8x (1.2-1.5
# against 0.85) and a training step with AGDA at 1.5-1.8x (0.57-0.72 against 0.39).
# `channels_last` made training steps 1.15-1.5x faster; for the forward pass alone it was not
# consistently better. The official settings are only as fast as the official code: their texture
# block dominates the extra cost, and `channels_last` slows their grouped convolutions down. On one
# H100 (fp32, batch 16) the paper settings trained at about 290 images/s, 155 with AGDA.
#
# ## Summary
#
# - **Architecture.** `dfattn.models.mat.MAT` follows the paper block by block: $M$ attention maps
#   from stage 5, the texture residual of stage 2 against its local average, densely connected
#   enhancement, bilinear attention pooling with normalised average pooling, and a global feature
#   pooled with the summed map. Every difference of the released code is a field of `MATConfig`;
#   `MATConfig.official()` switches them all.
# - **RIL.** Feature centres are buffers with a decaying moving average; the loss uses the updated
#   centres (which gives the inter term its gradient). In short runs the paper's margins separate
#   the heads' features but barely the maps; the official margins separate both.
# - **AGDA.** Vectorised, reproducible under a generator, and exact where the map is zero; trained as
#   a second forward pass, as in the official code.
# - **Schedule.** The official two-stage schedule is one config field; the model tells the trainer
#   what is active at each epoch.
# - **Cost.** B4 at 380 px: {glue:text}`b4_paper_params:.1f` M parameters and
#   {glue:text}`b4_paper_gflops:.1f` GFLOPs per image with the paper's blocks,
#   {glue:text}`b4_official_params:.1f` M and {glue:text}`b4_official_gflops:.1f` GFLOPs with the
#   official ones.
#
# What the trainer of {doc}`03_train` does with it: it calls `model.set_epoch(e)` at the start of
# every epoch and steps on `model.loss(batch)`, the total of `training_step`. The parameters of an
# inactive stage get no gradient, so one optimiser over all parameters serves both stages
# (`model.trainable(e)` names the active parts; the trainer trains only those).
