"""Which input normalisation do the offline EfficientNet-Lite0 weights expect?

Two readings, each for ImageNet statistics and for mean = std = 0.5 (inputs in [-1, 1]):

1. ImageNet top-3 classes of a few natural photos (scikit-image's sample images, when
   ``scikit-image`` is installed): a sanity check, not a discriminating one (both may agree).
2. The input statistics of the first BatchNorm layers: the batch variance of each channel over
   its running variance (median over channels). Weights fed the normalisation they were trained
   with see a ratio near 1; a wrong scale of the inputs shows as a ratio far from 1 in the first
   layers.

Images: the sample photos, the built-in synthetic faces, and ``../shared/data/real_faces`` where
present (nothing of it is written anywhere). Run: ``python benchmarks/check_lite_normalization.py``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import timm
import torch

from dfattn.data.folder import list_images, read_image
from dfattn.data.synthetic import SyntheticFaces
from dfattn.models.backbone import HALF_STATS, IMAGENET_STATS, imagenet_weights

REAL_FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_faces"
EXPECTED = {"chelsea": "cat (281-285)", "coffee": "espresso (967)", "rocket": "missile / projectile (657, 744)",
            "motorcycle": "moped / motor scooter (665, 670)"}


def batch(images: list[np.ndarray], size: int = 224) -> torch.Tensor:
    arrays = [cv2.resize(a, (size, size), interpolation=cv2.INTER_AREA) for a in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255


def bn_ratios(model: torch.nn.Module, x: torch.Tensor, first: int = 4) -> list[float]:
    """Median over channels of batch variance / running variance at the first BatchNorms."""
    ratios: list[float] = []

    def hook(module, inputs, output):
        var = inputs[0].var(dim=(0, 2, 3))
        keep = module.running_var > 1e-3  # skip dead channels
        ratios.append(float((var[keep] / module.running_var[keep]).median()))

    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)][:first]
    handles = [bn.register_forward_hook(hook) for bn in bns]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    args = parser.parse_args()
    weights = imagenet_weights(args.backbone)
    model = timm.create_model(args.backbone).eval()
    model.load_state_dict(weights.state)
    print(f"{args.backbone}: weights from {weights.source}; the stats dfattn uses with them: "
          f"mean {weights.stats[0]}, std {weights.stats[1]}")
    stats = {"imagenet": IMAGENET_STATS, "half (0.5/0.5)": HALF_STATS}

    sets: dict[str, torch.Tensor] = {}
    try:
        from skimage import data

        photos = {"chelsea": data.chelsea(), "coffee": data.coffee(), "rocket": data.rocket(),
                  "motorcycle": data.stereo_motorcycle()[0]}
        sets["sample photos"] = batch(list(photos.values()))
    except ImportError:
        photos = {}
        print("(scikit-image not installed: no sample photos, no top-3 check)")
    faces = SyntheticFaces(32, size=224, seed=0)
    sets["synthetic faces (32)"] = batch([faces[i].image for i in range(len(faces))])
    if REAL_FACES.is_dir():
        files = list_images(REAL_FACES)[:64]
        sets[f"real_faces ({len(files)})"] = batch([read_image(f) for f in files])

    for label, (mean, std) in stats.items():
        m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
        print(f"\n== {label}")
        if photos:
            with torch.no_grad():
                probs = model((sets["sample photos"] - m) / s).softmax(-1)
            for (name, _), p in zip(photos.items(), probs):
                top = p.topk(3)
                shown = ", ".join(f"{int(i)} ({float(v):.2f})" for v, i in zip(top.values, top.indices))
                print(f"  top-3 {name:<10} {shown}   expected {EXPECTED[name]}")
        for name, x in sets.items():
            ratios = bn_ratios(model, (x - m) / s)
            print(f"  first BatchNorms, batch var / running var, {name}: "
                  + " ".join(f"{r:.2f}" for r in ratios))


if __name__ == "__main__":
    main()
