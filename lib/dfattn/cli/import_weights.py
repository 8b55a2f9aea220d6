"""``dfattn-import``: turn an officially released LAA-Net, SBI or MAT checkpoint into a dfattn checkpoint.

The released weights are downloaded by the user, under their authors' licences. This tool reads
one such file (``torch.load(weights_only=True)``: tensors and plain containers, never arbitrary
pickle), renames every tensor onto the dfattn detector that computes the released model
(:mod:`dfattn.models.official`) and writes a dfattn checkpoint that ``dfattn-detect``,
``dfattn-evaluate`` and :mod:`dfattn.explain` load as they load a trained one::

    dfattn-import laanet PoseEfficientNet_..._model_best.pth --out laanet_sbi.safetensors
    dfattn-import sbi FFraw.tar --out sbi_ffraw.safetensors
    dfattn-import mat ff_c23.pth --out mat_ff_c23.safetensors

Every tensor of the file must be used or accounted for: a missing, unexpected or misshapen key
is an error naming it. The header records the source file's name and SHA-256, the release, its
input size and its preprocessing. ``--float64`` keeps the float64 LAA-Net release in double
precision (the default is float32). An existing output is kept unless ``--force`` is given.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import logging
import sys
from pathlib import Path
from typing import Sequence

from dfattn.cli.common import run_tool

log = logging.getLogger("dfattn-import")


def parser() -> argparse.ArgumentParser:
    from dfattn.models.official import VARIANTS

    p = argparse.ArgumentParser(prog="dfattn-import", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("release", choices=VARIANTS,
                   help="laanet (LAA-Net B4 + E-FPN, the SBI or BI model), sbi (SBI EfficientNet-B4) "
                        "or mat (MAT EfficientNet-B4)")
    p.add_argument("checkpoint", help="the released file (.pth / .tar)")
    p.add_argument("--out", required=True, help="the dfattn checkpoint to write (.safetensors)")
    p.add_argument("--float64", action="store_true",
                   help="keep a float64 release (laanet) in float64 (default: float32)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    return p


def sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def train_config(detector: str, config: dict, image_size: int) -> dict:
    """The header's ``train_config``: what the tools read from it (the input size, the evaluation
    sizes and seed of the paper-scale profile); the model was not trained by dfattn."""
    from dfattn.checkpoint import jsonable
    from dfattn.train import TrainConfig

    cfg = TrainConfig(model=detector, profile="gpu", model_config=config, image_size=image_size,
                      backbone=config["backbone"], pretrained=False, channels_last=False,
                      progress=False).resolved()
    return jsonable(dataclasses.asdict(cfg))


def _import(args: argparse.Namespace) -> int:
    from dfattn.checkpoint import save_checkpoint
    from dfattn.models.official import import_release, official_config, release

    src, out = Path(args.checkpoint), Path(args.out)
    if out.is_dir():
        raise ValueError(f"{out}: --out is a folder; give the checkpoint file to write")
    if out.exists() and not args.force:
        raise ValueError(f"{out}: exists already; give --force to overwrite it")
    if out.resolve() == src.resolve():
        raise ValueError(f"{out}: --out is the released file itself")
    rel = release(args.release)
    detector, config = official_config(args.release, args.float64)  # --float64 on a float32 release: error
    model, report = import_release(args.release, src, args.float64)
    meta = {
        "train_config": train_config(detector, config, rel.image_size),
        "imported": {
            "release": rel.variant, "description": rel.description, "source": src.name,
            "sha256": sha256(src), "input_size": rel.image_size,
            "preprocessing": rel.preprocessing, "p_fake": rel.p_fake,
            "dtype": report.dtype, "source_dtype": report.source_dtype,
            "report": report.lines(),
        },
    }
    save_checkpoint(out, model, meta)
    print(f"dfattn-import: {src} ({rel.variant}) -> {out}")
    for line in report.lines():
        print(f"  {line}")
    print(f"  input: {rel.image_size} px {rel.preprocessing['channels']}; P(fake) = {rel.p_fake}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool("dfattn-import", parser(), _import, argv, log_format="%(name)s: %(message)s")


if __name__ == "__main__":
    sys.exit(main())
