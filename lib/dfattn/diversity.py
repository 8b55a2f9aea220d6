"""Regional diversity of MAT's attention: map overlap, feature similarity, and the short training
run chapter 2b measures them with.

MAT's regional independence loss (RIL, Zhao et al., CVPR 2021, §3.3) asks each of the ``M``
attention maps to look at the same kind of region in every face and different maps to look at
different regions. Two measures say how far the maps of a model are from that, on held-out images:

- :func:`map_overlap`: the histogram intersection of two maps, each normalised to sum 1
  (1: identical maps, 0: disjoint), averaged over the pairs of maps and the images;
- :func:`feature_similarity`: the cosine between the unit semantic features ``V_j`` and ``V_k`` of
  one image, averaged the same way.

:func:`train_tiny` is the short run of chapter 2b that follows both while a small MAT trains, with
and without the RIL.
"""

from __future__ import annotations

import itertools

import pandas as pd
import torch
from torch import Tensor

from dfattn.models.mat import MAT, MATConfig, create_mat


def map_overlap(attention: Tensor) -> float:
    """The mean histogram intersection ``sum_hw min(A_j, A_k)`` over pairs ``j < k`` of maps (each
    normalised to sum 1) and over images.

    Args:
        attention: ``(B, M, h, w)`` non-negative attention maps, ``M >= 2``.

    Returns:
        a float in [0, 1]: 1 for identical maps, 0 for maps with disjoint supports.
    """
    p = attention.flatten(2)
    p = p / p.sum(-1, keepdim=True).clamp_min(1e-12)  # (B, M, h w)
    pairs = list(itertools.combinations(range(p.shape[1]), 2))
    return float(torch.stack([torch.minimum(p[:, j], p[:, k]).sum(-1) for j, k in pairs]).mean())


def feature_similarity(semantic: Tensor) -> float:
    """The mean cosine between the semantic features of two heads of one image, over pairs
    ``j < k`` of heads and over images (the features are taken as unit vectors, as MAT makes them:
    the cosine is their dot product).

    Args:
        semantic: ``(B, M, C)`` unit semantic features ``V`` (``MATOutput.semantic``), ``M >= 2``.

    Returns:
        a float in [-1, 1]: 1 for identical features, 0 for orthogonal ones.
    """
    pairs = list(itertools.combinations(range(semantic.shape[1]), 2))
    return float(torch.stack([(semantic[:, j] * semantic[:, k]).sum(-1) for j, k in pairs]).mean())


def train_tiny(variant: str, with_ril: bool, pool_images: Tensor, pool_labels: Tensor,
               held_out_images: Tensor, *, steps: int, batch: int, seed: int, backbone: str,
               pretrained: bool, device: torch.device | str = "cpu", eval_every: int | None = None,
               ) -> tuple[MAT, pd.DataFrame]:
    """A small MAT trained for ``steps`` Adam steps (lr 1e-3, weight decay 1e-6) on a pool of
    images, with the diversity of its attention measured on held-out images as it trains.

    The model is ``create_mat(variant)`` without AGDA and without the plain-backbone first stage,
    with the variant's RIL weight if ``with_ril`` else none; it starts from ``torch.manual_seed(seed)``
    and every step draws ``batch`` pool images by a permutation from a generator seeded with
    ``seed``, so runs of different variants see the same batches.

    Args:
        variant: ``"paper"`` or ``"official"`` (:func:`~dfattn.models.mat.create_mat`).
        with_ril: train with the regional independence loss.
        pool_images: ``(N, 3, S, S)`` training images in [0, 1]; pool_labels: ``(N,)`` 0 real, 1 fake.
        held_out_images: ``(K, 3, S, S)`` images of other identities the measures are taken on.
        steps, batch: optimiser steps and images per step.
        seed: the initialisation and batch-order seed.
        backbone, pretrained: the MAT backbone (timm name) and whether it starts from ImageNet weights.
        device: where to train.
        eval_every: measure every so many steps, and after the last (default ``max(1, steps // 6)``).

    Returns:
        the trained model and one history row per measurement with columns ``step``, ``ce``, ``ril``
        (that step's training losses), ``map overlap`` and ``feature similarity`` (held-out images,
        eval mode).
    """
    eval_every = eval_every or max(1, steps // 6)
    torch.manual_seed(seed)
    weight = MATConfig.official().ril_weight if variant == "official" else MATConfig().ril_weight
    net = create_mat(variant, backbone=backbone, pretrained=pretrained,
                     ril_weight=weight if with_ril else 0.0, agda_weight=0.0, pretrain_epochs=0)
    net = net.to(device)
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-6)
    order = torch.Generator().manual_seed(seed)
    x_test = held_out_images.to(device)
    history = []
    for step in range(1, steps + 1):
        idx = torch.randperm(len(pool_images), generator=order)[:batch]
        losses, _ = net.train().training_step(pool_images[idx].to(device), pool_labels[idx].to(device))
        optimiser.zero_grad()
        losses.total.backward()
        optimiser.step()
        if step % eval_every == 0 or step == steps:
            with torch.no_grad():
                out = net.eval()(x_test)
            history.append({"step": step, "ce": losses.as_dict()["ce"], "ril": losses.as_dict()["ril"],
                            "map overlap": map_overlap(out.attention),
                            "feature similarity": feature_similarity(out.semantic)})
    return net, pd.DataFrame(history)


__all__ = ["feature_similarity", "map_overlap", "train_tiny"]
