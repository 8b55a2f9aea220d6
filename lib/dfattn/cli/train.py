"""``dfattn-train``: train LAA-Net, MAT or the baseline from a profile plus overrides.

Every field of :class:`~dfattn.train.TrainConfig` is an option (``--image-size 128``,
``--lr 1e-4``, ``--sam``/``--no-sam``...); detector fields go through ``--model-set KEY=VALUE``
(values are JSON: ``--model-set fpn='"none"'``, ``--model-set loss_weights='{"heatmap": 10}'``).
A run resumes from ``OUT/last.safetensors`` when it exists. Several GPUs::

    torchrun --nproc_per_node 4 -m dfattn.cli.train --model laanet --profile gpu --out runs/laanet

Examples::

    dfattn-train --model laanet --profile cpu --out runs/laanet
    dfattn-train --model mat --data folder:../shared/data/real_faces --epochs 4 --out runs/mat_real
    dfattn-train --model baseline --profile smoke --out runs/smoke_baseline --tensorboard
    tensorboard --logdir runs        # every metrics.csv column, per epoch
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from pathlib import Path
from typing import Any, Sequence

from dfattn.config import profile_from_env
from dfattn.cli.common import run_tool
from dfattn.train import TrainConfig, train

_SKIP = {"model_config"}


def _bool_or_none(hint: Any) -> bool:
    return hint in (bool, bool | None, typing.Optional[bool])


def _scalar_type(hint: Any):
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    return args[0] if args[0] in (int, float, str) else str


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dfattn-train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="run folder (metrics.csv, last/best.safetensors)")
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if f.name in _SKIP:
            continue
        flag = "--" + f.name.replace("_", "-")
        hint = hints[f.name]
        if _bool_or_none(hint):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            p.add_argument(flag, type=_scalar_type(hint), default=None)
    p.add_argument("--model-set", action="append", default=[], metavar="KEY=VALUE",
                   help="a detector config field (value as JSON; repeatable)")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
              if f.name not in _SKIP and getattr(args, f.name) is not None}
    model_config: dict[str, Any] = {}
    for item in args.model_set:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--model-set expects KEY=VALUE, got {item!r}")
        try:
            model_config[key] = json.loads(raw)
        except json.JSONDecodeError:
            model_config[key] = raw  # a bare string
    values["profile"] = profile_from_env(values.get("profile"))  # --profile > $DFATTN_PROFILE > auto
    return TrainConfig(**values, model_config=model_config)


def _train(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    _, history = train(config, args.out)  # the trainer refuses an --out that is a file
    if len(history):
        last = history.iloc[-1]
        print(f"dfattn-train: {len(history)} epochs in {args.out}; last val AUC {last.get('val_auc', float('nan')):.4f}")
    if config.tensorboard:
        print(f"dfattn-train: TensorBoard events in {Path(args.out) / 'tensorboard'} "
              f"(tensorboard --logdir {args.out})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool("dfattn-train", parser(), _train, argv)


if __name__ == "__main__":
    sys.exit(main())
