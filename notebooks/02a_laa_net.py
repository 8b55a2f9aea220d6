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

# %% tags=["parameters"]
profile = None  # smoke | cpu | gpu; None: $DFATTN_PROFILE, else auto
seed = 0

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from myst_nb import glue

from dfattn.config import figures_dir, get_device, get_profile, seed_everything
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
from dfattn.models.profile import count_flops, count_parameters
from dfattn.plotting import save_figure, show

PROFILE = get_profile(profile)
FIG = figures_dir(PROFILE)
DEVICE = get_device()
seed_everything(seed)
S = PROFILE.image_size
print(f"profile {PROFILE.name}: {PROFILE.backbone} at {S} px on {DEVICE}, "
      f"ImageNet weights: {PROFILE.pretrained}")


def save(fig, name):
    save_figure(fig, name, FIG)


# %% [markdown]
# ## The model and a pseudo-fake
#
# The model takes images in $[0, 1]$ and normalises them with the backbone's ImageNet statistics
# (the official code uses mean = std = 0.5 for AdvProp weights: `normalization="half"`). Its
# input is a real face and its self-blended twin from chapter 1, at the profile's size.

# %%
config = LAANetConfig(backbone=PROFILE.backbone, pretrained=PROFILE.pretrained)
model = LAANet(config).to(DEVICE).to(memory_format=torch.channels_last)
pairs = PseudoFakePairs(SyntheticFaces(16, 256, seed=seed), S, train=False, seed=seed)
batch = {k: v.to(DEVICE) for k, v in collate_pairs([pairs[i] for i in range(len(pairs))]).items()}
real, fake = batch["image"][0], batch["image"][1]
print(model.backbone.info, "decoder output channels:", model.decoder.out_channels)

# %% [markdown]
# ## Backbone stages and the E-FPN gates
#
# The backbone returns maps at strides 8, 16 and 32, and the head convolution (1x1 to 1280
# channels for Lite0, 1792 for B4) at stride 32. The decoder starts from the head map and, at each
# stride, fuses the backbone map through the gate $1 - \sigma(y)$: where the upsampled high-level
# feature already responds strongly the low-level feature is suppressed; it passes where the
# high-level path is weak. {numref}`fig-02a-stages` shows the mean absolute activation of each
# backbone map and the mean gate of each fusion for the fake.

# %% tags=["hide-input"]
model.eval()
with torch.no_grad():
    x = (batch["image"][1:2] - model.mean) / model.std
    stages = model.backbone(x)
    gates: list = []
    fused = model.features(batch["image"][1:2], gates)
fig, axes = plt.subplots(2, 4, figsize=(12, 6))
show(axes[0, 0], fake.permute(1, 2, 0).cpu(), "fake (input)")
for ax, f, s in zip(axes[0, 1:], stages, model.backbone.info.strides):
    show(ax, f[0].abs().mean(0).cpu(), f"backbone, stride {s}, {f.shape[1]} ch", "viridis")
show(axes[1, 0], batch["mask"][1, 0].cpu(), "blend mask", "gray")
for ax, g, s in zip(axes[1, 1:], gates, (32, 16, 8)):
    show(ax, g[0].mean(0).cpu(), f"gate 1 - sigmoid(y), stride {s}", "coolwarm")
save(fig, "02a_stages")

# %% [markdown]
# ```{glue:figure} 02a_stages
# :name: fig-02a-stages
#
# Top: the input and the mean absolute activation of the backbone maps (ImageNet weights where the
# profile uses them). Bottom: the blend mask and the mean E-FPN gate at each fusion (untrained
# decoder: at initialisation the gates sit near 0.5).
# ```
#
# ## Training the heads, briefly
#
# An untrained decoder says nothing, so we fit the model for a few steps on the 16 pairs above
# (the full training, with held-out validation, is chapter 3). This is **not** a trained detector:
# it only shows what each head is asked to produce.

# %%
steps = {"smoke": 2, "cpu": 60, "gpu": 150}[PROFILE.name]
weights = LAANetLossWeights()  # official SBI config: heatmap 100, consistency 100, cls 1
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
history = []
model.train()
for step in range(steps):
    loss, parts = laanet_loss(model(batch["image"].contiguous(memory_format=torch.channels_last)), batch, weights)
    opt.zero_grad()
    loss.backward()
    opt.step()
    history.append({"step": step, "total": loss.item(), **{k: v.item() for k, v in parts.items()}})
history = pd.DataFrame(history).set_index("step")
history.iloc[[0, len(history) // 2, -1]].round(4)

# %% tags=["hide-input"]
model.eval()
with torch.no_grad():
    out = model(batch["image"])
    cons = consistency_map(out.embedding, batch["consistency"])
    prob = torch.sigmoid(out.cls)
fig, axes = plt.subplots(4, 5, figsize=(12, 10))
for row, k in enumerate([0, 1, 3, 5]):
    kind = "fake" if batch["label"][k] else "real"
    show(axes[row, 0], batch["image"][k].permute(1, 2, 0).cpu(), f"{kind}: P(fake) = {prob[k]:.2f}")
    show(axes[row, 1], batch["heatmap"][k, 0].cpu(), "heatmap target", "magma")
    show(axes[row, 2], torch.sigmoid(out.heatmap[k, 0]).cpu(), "heatmap predicted", "magma")
    show(axes[row, 3], batch["consistency"][k, 0].cpu(), "consistency target", "magma")
    show(axes[row, 4], cons[k, 0].cpu(), "consistency predicted", "magma")
save(fig, "02a_heads")

# %% [markdown]
# ```{glue:figure} 02a_heads
# :name: fig-02a-heads
#
# The three heads after a brief fit on 16 pairs: classification probability, heatmap of
# vulnerable points and self-consistency map, each beside its target. Real images have all-zero
# targets.
# ```
#
# ## The heads and the losses
#
# All three heads read the fused stride-4 map:
#
# - **classification**: conv 3x3 + BN + ReLU, global average pooling, a linear layer to one
#   logit; $L_{cls}$ is binary cross-entropy. Inference uses this head only
#   (`model.predict_proba`), which skips the other two: 13.9 instead of 16.6 GFLOPs for B4.
# - **heatmap**: conv 3x3 + BN + ReLU, conv 1x1 to one channel whose bias starts at $-2.19$
#   (CenterNet's prior, $\sigma(-2.19) = 0.1$). $L_{hm}$ is the modified focal loss of
#   CornerNet/CenterNet {cite:p}`zhou2019centernet` with $p = \sigma(\hat y)$:
#
# $$
# L_{hm} = -\frac{1}{N_{pos}} \sum_{xy}
# \begin{cases}
# (1 - p)^2 \log p & y = 1 \\
# (1 - y)^4\, p^2 \log (1 - p) & \text{otherwise}
# \end{cases}
# $$
#
# - **self-consistency**: the same stem, then a 1x1 convolution to a 256-d embedding $e_p$ per
#   pixel. The anchor $a$ is the argmax of the consistency *target* (a vulnerable point), and the
#   prediction is $\hat C_p = \sigma(\langle e_a, e_p \rangle / \sqrt{256})$; $L_c$ is binary
#   cross-entropy against the target. Because the anchor comes from the label, this branch
#   exists only in training.
#
# $$
# L = \lambda_{hm} L_{hm} + \lambda_c L_c + \lambda_{cls} L_{cls}
# $$
#
# The official code also scales the positive focal term by 0.72 ("label smoothing"). The paper's
# $\lambda$ values are not in our notes; the defaults follow the official SBI config, and
# {numref}`tbl-02a-weights` lists the alternatives, all available as `LAANetLossWeights`.

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
# Loss weights: ours, and those of the official configs.
# ```
#
# ## Size and cost
#
# {numref}`tbl-02a-params` counts parameters and FLOPs (torch's `FlopCounterMode`, 2 FLOPs per
# multiply-add) per component, for the paper's B4 at 384 px and for the sizes of the `cpu` and
# `smoke` profiles. The B4 model matches the official one: 27.13 M parameters with the code's
# shared Inception convolution (ours has four, 9.6 k more) and 16.6 GFLOPs.

# %%
rows = []
for name, backbone, size in [("paper (B4)", "efficientnet_b4", 384),
                             ("cpu profile", "efficientnet_lite0", 128),
                             ("smoke profile", "efficientnet_lite0", 64)]:
    m = LAANet(LAANetConfig(backbone=backbone)).eval()
    total, parts = count_flops(m, torch.rand(1, 3, size, size))
    cls_only, _ = count_flops(m, torch.rand(1, 3, size, size), lambda mm, x: mm(x, heads=("cls",)))
    for component, child in m.named_children():
        if count_parameters(child):
            rows.append({"setting": f"{name}, {size} px", "component": component,
                         "parameters (M)": count_parameters(child) / 1e6, "GFLOPs": parts[component] / 1e9})
    rows.append({"setting": f"{name}, {size} px", "component": "total (3 heads)",
                 "parameters (M)": count_parameters(m) / 1e6, "GFLOPs": total / 1e9})
    rows.append({"setting": f"{name}, {size} px", "component": "inference path (cls only)",
                 "parameters (M)": np.nan, "GFLOPs": cls_only / 1e9})
size_table = pd.DataFrame(rows).set_index(["setting", "component"]).round(3)
size_table.to_csv(FIG / "02a_params_flops.csv")
(FIG / "02a_params_flops.md").write_text(size_table.to_markdown() + "\n")
glue("tbl-02a-params", size_table, display=False)
size_table

# %% [markdown]
# ```{glue:figure} tbl-02a-params
# :name: tbl-02a-params
#
# Parameters and FLOPs of LAA-Net per component.
# ```
#
# ## Summary
#
# - LAA-Net = ImageNet EfficientNet + E-FPN decoder to stride 4 + three heads. Any timm CNN works
#   as the backbone; EfficientNet-family models also feed their 1x1 head convolution to the
#   decoder, as the paper's B4 does.
# - The E-FPN gate $1 - \sigma(y)$ lets low-level detail through only where the high-level decoder
#   map is weak; `fpn="fpn"` (no gate) and `fpn="none"` (no lateral maps) are the ablations.
# - The heatmap head learns the vulnerable points with the focal loss; the consistency head learns
#   an embedding in which boundary pixels resemble the anchor point. Only the classifier runs at
#   inference, and `predict_proba` returns a probability, not a raw logit.
# - Paper vs code: four separate Inception convolutions (code: one shared), ImageNet
#   normalisation (code: 0.5/0.5), plain focal loss (code: 0.72 on positives), weights of the
#   official SBI config.
