"""Where does a detector look? Attribution maps and their agreement with the manipulated region.

Both detectors of this book claim to *localise*: LAA-Net predicts a heatmap of blending artefacts,
MAT pools features under ``M`` learned attention maps. This module puts those explicit maps side by
side with post-hoc attributions (captum) of the same scalar, the logit of P(fake), and scores every
map against the ground-truth manipulation mask.

**Attributions** (:func:`attribution_maps`; each returns ``(B, H, W)`` float, non-negative, at the
input resolution):

=========================  =========================================================================
``"integrated_gradients"``  Sundararajan et al. (ICML 2017): path integral of the gradient from a
                            black image ``x'`` to the input ``x``,
                            ``(x - x') * mean_a grad f(x' + a (x - x'))``; ``|.|`` summed over
                            the colour channels.
``"gradcam"``               Selvaraju et al. (ICCV 2017): channel weights = spatial mean of the
                            gradient at a layer, weighted channel sum, ReLU; upsampled bilinearly.
``"occlusion"``             Zeiler & Fergus (ECCV 2014): drop of the logit when a black window hides
                            a patch, averaged over the windows covering each pixel; positive part.
``"own"``                   The model's explicit attention (``Detector.attention_map``): LAA-Net's
                            heatmap head (sigmoid), MAT's attention maps (mean over the ``M``
                            heads by default); upsampled.
=========================  =========================================================================

All of them explain ``fake_logit(images) -> (B,)``, the logit of P(fake) every detector exposes
(LAA-Net: the classification logit; MAT: ``z_fake - z_real``; the baseline: its one logit). Models
run in eval mode and are left exactly as they were found (:func:`evaluating`).

**Localisation metrics** of one map against one mask (both ``(H, W)``, numpy or torch; masks are
binarised at 0.5, ``mask >= 0.5``):

- :func:`pointing_game` (Zhang et al., ECCV 2016): does the map's maximum fall in the mask?
- :func:`localisation_auc`: ROC AUC of the map's values as scores of "pixel is manipulated";
- :func:`energy_in_mask`: the share of the map's positive mass inside the mask, the
  "energy-based pointing game" of Score-CAM (Wang et al., CVPRW 2020).

:func:`localisation_scores` computes them for a batch of maps per method (one row per image),
:func:`localisation_table` averages them per method and group (e.g. manipulation family).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Literal, Union

import numpy as np
import pandas as pd
import torch
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Occlusion
from scipy import ndimage
from sklearn.metrics import roc_auc_score
from torch import Tensor, nn

from dfattn.evaluate import evaluating, fake_logit
from dfattn.models.base import Detector

Method = Literal["integrated_gradients", "gradcam", "occlusion", "own"]
METHODS: tuple[str, ...] = ("integrated_gradients", "gradcam", "occlusion", "own")
Ties = Literal["all", "any", "first"]
ArrayLike = Union[np.ndarray, Tensor]
METRICS: tuple[str, ...] = ("pointing_game", "auc", "energy")


# ------------------------------------------------------------------------------------------------
# The explained scalar and model hygiene
# ------------------------------------------------------------------------------------------------


def _check_images(images: Tensor) -> None:
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"attributions need images as a tensor (B, 3, H, W) in [0, 1], "
                         f"got {shape}")
    if not images.is_floating_point():
        raise ValueError(f"attributions need float images in [0, 1], got dtype {images.dtype}")


def _upsample(maps: Tensor, size: Sequence[int]) -> Tensor:
    """``(B, C, h, w) -> (B, C, H, W)`` bilinearly (captum's helper; a convex combination, so
    non-negative maps stay non-negative)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return LayerAttribution.interpolate(maps, tuple(size), interpolate_mode="bilinear")


# ------------------------------------------------------------------------------------------------
# Attribution methods
# ------------------------------------------------------------------------------------------------


def _integrated_gradients_map(model: nn.Module, images: Tensor, n_steps: int = 32,
                             baseline: float | Tensor = 0.0,
                             internal_batch_size: int | None = 64) -> Tensor:
    """Integrated Gradients of the fake logit, ``|attribution|`` summed over channels,
    ``(B, H, W)``.

    Args:
        n_steps: points of captum's Gauss-Legendre rule on the path from ``baseline`` to the image.
        baseline: the reference image (default 0.0: black, in the [0, 1] input space the models
            take), a number or a tensor broadcastable to ``images``.
        internal_batch_size: images per forward pass (the ``B * n_steps`` path points are chunked;
            ``None``: all at once).
    """
    ig = IntegratedGradients(lambda x: fake_logit(model, x))
    attributions = ig.attribute(images, baselines=baseline, n_steps=n_steps,
                                internal_batch_size=internal_batch_size)  # (B, 3, H, W)
    return attributions.abs().sum(1)  # (B, H, W)


def default_gradcam_layer(model: nn.Module) -> nn.Module:
    """The deepest map of ``model.backbone`` (a :class:`~dfattn.models.backbone.Backbone`): the
    EfficientNet head convolution (+ BN + activation) where the backbone has one (LAA-Net, MAT, the
    baseline with EfficientNets), otherwise the module that ends the last feature stage
    (``layer4`` of a ResNet, ``blocks.6`` of an EfficientNet without head)."""
    backbone = getattr(model, "backbone", None)
    if backbone is None or not hasattr(backbone, "body"):
        raise ValueError(f"{type(model).__name__} has no dfattn Backbone at .backbone: pass the "
                         f"GradCAM layer explicitly (layer=module or its dotted name)")
    if getattr(backbone, "head", None) is not None:
        return backbone.head
    name = backbone.body.feature_info.module_name()[-1]
    for candidate in (name, name.replace(".", "_")):  # timm's FeatureListNet flattens dotted names
        try:
            return backbone.body.get_submodule(candidate)
        except AttributeError:
            continue
    raise ValueError(f"cannot find the last stage {name!r} in {type(backbone.body).__name__}")


def _gradcam_map(model: nn.Module, images: Tensor, layer: nn.Module | str | None = None) -> Tensor:
    """Grad-CAM of the fake logit at ``layer``, ReLU, upsampled bilinearly: ``(B, H, W)``.

    Args:
        layer: a submodule of ``model`` or its dotted name (default :func:`default_gradcam_layer`).
    """
    if layer is None:
        layer = default_gradcam_layer(model)
    elif isinstance(layer, str):
        layer = model.get_submodule(layer)
    cam = LayerGradCam(lambda x: fake_logit(model, x), layer)
    maps = cam.attribute(images, relu_attributions=True)  # (B, 1, h, w)
    return _upsample(maps, images.shape[-2:]).squeeze(1)  # (B, H, W)


def _occlusion_map(model: nn.Module, images: Tensor, window: int | tuple[int, int] | None = None,
                  stride: int | tuple[int, int] | None = None, baseline: float = 0.0,
                  perturbations_per_eval: int = 16) -> Tensor:
    """Occlusion of the fake logit: ``f(x) - f(x with a window set to baseline)``, averaged over the
    windows that cover each pixel; positive part (evidence *for* fake): ``(B, H, W)``.

    Args:
        window: occluding square (or ``(h, w)``); default an eighth of each side (at least 1 px).
        stride: step between windows; default half the window (at least 1 px). Pixels that no
            window covers (when ``(side - window)`` is not a multiple of the stride) get 0.
        baseline: the occluding value (default 0.0: black).
        perturbations_per_eval: occluded copies per forward pass (memory vs speed).
    """
    h, w = images.shape[-2:]
    win = _pair(window) if window is not None else (max(1, h // 8), max(1, w // 8))
    step = _pair(stride) if stride is not None else (max(1, win[0] // 2), max(1, win[1] // 2))
    if win[0] > h or win[1] > w or min(win + step) < 1:
        raise ValueError(f"occlusion window {win} / stride {step} do not fit images of size "
                         f"{(h, w)}")
    occ = Occlusion(lambda x: fake_logit(model, x))
    attributions = occ.attribute(images, sliding_window_shapes=(3, *win), strides=(3, *step),
                                 baselines=baseline, perturbations_per_eval=perturbations_per_eval)
    return attributions.mean(1).clamp_min(0)  # the window spans all channels: they are equal


def _own_attention_map(model: Detector, images: Tensor, **kw) -> Tensor:
    """The model's explicit attention (:meth:`~dfattn.models.base.Detector.attention_map`:
    LAA-Net's heatmap probabilities, MAT's maps reduced over heads, ``reduce="mean"`` or
    ``"max"``), upsampled bilinearly to the input: ``(B, H, W)``.

    Raises:
        TypeError: for a model without explicit attention (e.g. the plain baseline).
    """
    with torch.no_grad():
        maps = model.attention_map(images, **kw)  # (B, h, w)
    if maps is None:
        raise TypeError(f"{type(model).__name__} has no explicit attention map: method 'own' needs a "
                        f"detector whose attention_map() returns one (LAA-Net, MAT)")
    return _upsample(maps.unsqueeze(1), images.shape[-2:]).squeeze(1)  # (B, H, W)


_ATTRIBUTIONS: dict[str, Callable[..., Tensor]] = {
    "integrated_gradients": _integrated_gradients_map,
    "gradcam": _gradcam_map,
    "occlusion": _occlusion_map,
    "own": _own_attention_map,
}


def attribution_maps(model: Detector, images: Tensor, method: Method, **kw) -> Tensor:
    """Attribution of the fake logit by ``method``: ``(B, H, W)`` float32, non-negative, detached.

    Args:
        model: a :class:`~dfattn.models.base.Detector`; run in eval mode, its modes restored
            afterwards.
        images: ``(B, 3, H, W)`` in [0, 1], on the model's device.
        method: one of :data:`METHODS`.
        **kw: options of the method (a wrong name raises ``TypeError``):

            - ``"integrated_gradients"``: ``n_steps=32`` (Gauss-Legendre points on the path),
              ``baseline=0.0`` (black; a number or a tensor broadcastable to ``images``),
              ``internal_batch_size=64`` (path images per forward pass; ``None``: all at once);
            - ``"gradcam"``: ``layer`` (a submodule or its dotted name; default
              :func:`default_gradcam_layer`);
            - ``"occlusion"``: ``window`` (default an eighth of each side), ``stride`` (default
              half the window), ``baseline=0.0`` (black), ``perturbations_per_eval=16``;
            - ``"own"``: ``reduce="mean"`` or ``"max"`` over MAT's heads.
    """
    if method not in _ATTRIBUTIONS:
        raise ValueError(f"unknown attribution method {method!r}; choose from {METHODS}")
    _check_images(images)
    with evaluating(model), torch.enable_grad():
        maps = _ATTRIBUTIONS[method](model, images, **kw)
    return maps.detach().float()


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    return int(value[0]), int(value[1])


# ------------------------------------------------------------------------------------------------
# Localisation metrics
# ------------------------------------------------------------------------------------------------


def _as_array(x: ArrayLike) -> np.ndarray:
    array = x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
    return array.astype(np.float64, copy=False)


def _map_and_mask(saliency: ArrayLike, mask: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Float map and boolean mask (``mask >= 0.5``), both ``(H, W)``, checked."""
    m, k = _as_array(saliency), _as_array(mask)
    if m.ndim != 2 or m.shape != k.shape:
        raise ValueError(f"map and mask must both be (H, W) of the same size, got {m.shape} "
                         f"and {k.shape}")
    if not np.isfinite(m).all():
        raise ValueError("map has non-finite values (NaN or inf)")
    return m, k >= 0.5


def pointing_game(saliency: ArrayLike, mask: ArrayLike, tolerance: float = 0,
                  ties: Ties = "all") -> bool:
    """Pointing game: is the map's maximum inside the mask, or within ``tolerance`` pixels of it?

    The mask is dilated by a disc of radius ``tolerance`` (Euclidean distance to the nearest mask
    pixel ``<= tolerance``; TorchRay uses 15 px at ImageNet scale). Pixels within a relative 1e-6
    of the maximum count as maximal (upsampled coarse maps have flat tops). With several maximal
    pixels:

    - ``ties="all"`` (default): a hit needs *every* maximal pixel in the dilated mask, so a flat
      map scores a hit only when the dilated mask covers the whole image (no hit by luck);
    - ``"any"``: one maximal pixel in the dilated mask suffices (lenient);
    - ``"first"``: the first maximal pixel in raster order decides (``np.argmax``, as TorchRay).

    Raises:
        ValueError: for an empty mask (nothing to point at; :func:`localisation_scores` gives NaN).
    """
    if ties not in ("all", "any", "first"):
        raise ValueError(f"ties must be 'all', 'any' or 'first', got {ties!r}")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0 pixels, got {tolerance}")
    m, k = _map_and_mask(saliency, mask)
    if not k.any():
        raise ValueError("pointing game is undefined for an empty mask (no manipulated pixel)")
    near = k if tolerance == 0 else ndimage.distance_transform_edt(~k) <= tolerance  # (H, W)
    if ties == "first":
        return bool(near.flat[np.argmax(m)])
    top = m.max()
    hits = near[m >= top - 1e-6 * abs(top)]  # the dilated-mask flag of every maximal pixel
    return bool(hits.all() if ties == "all" else hits.any())


def localisation_auc(saliency: ArrayLike, mask: ArrayLike) -> float:
    """ROC AUC of the map's values as scores of the mask's pixels (scikit-learn): 1 when every
    manipulated pixel outscores every other, 0.5 for a constant map, 0 for the reverse order;
    NaN when the mask is empty or full (one class only)."""
    m, k = _map_and_mask(saliency, mask)
    if k.all() or not k.any():
        return math.nan
    return float(roc_auc_score(k.ravel(), m.ravel()))


def energy_in_mask(saliency: ArrayLike, mask: ArrayLike) -> float:
    """Energy-based pointing game: ``sum_{mask} max(map, 0) / sum max(map, 0)``, in [0, 1].

    NaN when the mask is empty or the map has no positive mass."""
    m, k = _map_and_mask(saliency, mask)
    energy = np.clip(m, 0.0, None)
    total = energy.sum()
    if not k.any() or total <= 0:
        return math.nan
    return float(energy[k].sum() / total)


def localisation_scores(maps: Mapping[str, ArrayLike], masks: ArrayLike,
                        groups: Sequence | np.ndarray | None = None, tolerance: float = 0,
                        ties: Ties = "all") -> pd.DataFrame:
    """Every metric for every image and method: one row per ``(method, image)``.

    Args:
        maps: method name -> maps ``(N, H, W)``.
        masks: ground-truth masks ``(N, H, W)``, binarised at 0.5.
        groups: a label per image (e.g. manipulation family), default all ``"all"``.
        tolerance, ties: of :func:`pointing_game`.

    Returns:
        Columns ``method, group, image, pointing_game`` (1.0 hit, 0.0 miss), ``auc, energy``;
        a metric that is undefined for an image (empty or full mask, no positive mass) is NaN.
    """
    k = _as_array(masks)
    if k.ndim != 3:
        raise ValueError(f"masks must be (N, H, W), got shape {k.shape}")
    n = len(k)
    labels = np.asarray(["all"] * n if groups is None else list(groups), dtype=object)
    if len(labels) != n:
        raise ValueError(f"{len(labels)} group labels for {n} masks")
    rows = []
    for method, method_maps in maps.items():
        m = _as_array(method_maps)
        if m.shape != k.shape:
            raise ValueError(f"maps[{method!r}] has shape {m.shape}, masks have {k.shape}")
        for i in range(n):
            empty = not (k[i] >= 0.5).any()
            hit = math.nan if empty else float(pointing_game(m[i], k[i], tolerance, ties))
            auc, energy = localisation_auc(m[i], k[i]), energy_in_mask(m[i], k[i])
            rows.append((method, labels[i], i, hit, auc, energy))
    return pd.DataFrame(rows, columns=["method", "group", "image", *METRICS])


def localisation_table(maps: Mapping[str, ArrayLike], masks: ArrayLike,
                       groups: Sequence | np.ndarray | None = None, tolerance: float = 0,
                       ties: Ties = "all") -> pd.DataFrame:
    """Mean and count of each metric per method and group, plus an ``"all"`` row per method.

    Arguments as :func:`localisation_scores`. Returns a frame indexed by ``(method, group)``
    (methods in the order of ``maps``, groups sorted, ``"all"`` last) with columns
    ``(metric, "mean")`` and ``(metric, "count")`` for ``metric`` in ``pointing_game`` (hit rate),
    ``auc``, ``energy``; ``count`` is the number of images on which the metric is defined (NaNs are
    left out of the mean).
    """
    scores = localisation_scores(maps, masks, groups, tolerance, ties)
    names = sorted(set(scores["group"]), key=str)
    if groups is not None and "all" in names:
        raise ValueError("a group may not be called 'all' (the name of the overall row)")
    both = pd.concat([scores, scores.assign(group="all")]) if groups is not None else scores
    table = both.groupby(["method", "group"], sort=False)[list(METRICS)].agg(["mean", "count"])
    rows = names + ["all"] if groups is not None else ["all"]
    order = [(method, g) for method in maps for g in rows]
    return table.reindex(pd.MultiIndex.from_tuples(order, names=["method", "group"]))


__all__ = [
    "METHODS",
    "METRICS",
    "attribution_maps",
    "default_gradcam_layer",
    "energy_in_mask",
    "evaluating",
    "localisation_auc",
    "localisation_scores",
    "localisation_table",
    "pointing_game",
]
