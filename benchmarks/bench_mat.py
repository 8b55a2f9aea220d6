"""MAT throughput: forward and train-step images/s, with and without AGDA, and the effect of channels_last.

Run as ``python benchmarks/bench_mat.py`` (``--repeats``, ``--profile``, ``--skip-official``,
``--device cuda``, ``--batch``). Cases:

- the profile's backbone at the profile's image size (``cpu``: EfficientNet-Lite0, 128 px), batch 8,
  channels_last;
- EfficientNet-B4 at 380 px, batch 4, the setting of the reference measurements, for the paper
  configuration (default) and the released code's configuration (``MATConfig.official()``: its
  per-head texture block at stride 4 costs about 40% of a train step). channels_last speeds up the
  paper configuration (printed) but slows down the official one, whose grouped convolutions at
  95 x 95 then need layout copies; that one is measured contiguous.

A train step is ``training_step`` + ``backward`` + an AdamW step; "with AGDA" adds the augmentation
and its second forward/backward pass, as in the official code. Weights are random (the speed does
not depend on them). Each number is the best of ``--repeats`` timed iterations after one warm-up
(the machine is shared, so the minimum is the least disturbed estimate); the load average is
printed before and after.

Reference measured with the official code on the same 2-core machines (B4 at 380 px, batch 4): forward
2.8 images/s, train step 0.85 images/s without AGDA and 0.39 with it. Goal: >= 1.3x each.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Callable

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "lib"))

from dfattn.config import profile_from_env  # noqa: E402
from dfattn.models.mat import MAT, MATConfig  # noqa: E402

OFFICIAL = {"forward": 2.8, "train": 0.85, "train+AGDA": 0.39}
GOAL = 1.3


def best_seconds(fn: Callable[[], None], repeats: int, device: torch.device, warmup: int = 1) -> float:
    def timed() -> float:
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    for _ in range(warmup):
        timed()
    return min(timed() for _ in range(repeats))


def measure(config: MATConfig, size: int, batch: int, repeats: int, channels_last: bool,
            agda: bool = True, device: torch.device = torch.device("cpu")) -> dict[str, float]:
    """Images/s of forward (eval, no grad), train step, and (if ``agda``) train step with AGDA."""
    torch.manual_seed(0)
    model = MAT(config.replace(agda_weight=0.0, pretrain_epochs=0)).to(device)
    images = torch.rand(batch, 3, size, size, device=device)
    labels = torch.arange(batch, device=device) % 2
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-6)
    generator = torch.Generator(device).manual_seed(0)

    def forward() -> None:
        with torch.no_grad():
            model(images)

    def train_step() -> None:
        losses, _ = model.training_step(images, labels, generator)
        optimiser.zero_grad(set_to_none=True)
        losses.total.backward()
        optimiser.step()

    model.eval()
    out = {"forward": batch / best_seconds(forward, repeats, device)}
    model.train()
    out["train"] = batch / best_seconds(train_step, repeats, device)
    if agda:
        model.config = model.config.replace(agda_weight=1.0)
        out["train+AGDA"] = batch / best_seconds(train_step, repeats, device, warmup=0)
    return out


def report(name: str, rates: dict[str, float], reference: bool) -> None:
    parts = []
    for key, rate in rates.items():
        text = f"{key} {rate:6.2f} img/s"
        if reference:
            ratio = rate / OFFICIAL[key]
            text += f" ({ratio:.2f}x official{'' if ratio >= GOAL else ', below goal'})"
        parts.append(text)
    print(f"{name:44s} " + "; ".join(parts), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", default="cpu", help="profile for the small case (smoke | cpu | gpu)")
    parser.add_argument("--skip-official", action="store_true", help="only the paper configuration")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the reference numbers are CPU ones)")
    parser.add_argument("--batch", type=int, default=4, help="batch of the B4 380 px case")
    args = parser.parse_args()
    device = torch.device(args.device)
    reference = device.type == "cpu" and args.batch == 4
    start = time.perf_counter()
    print(f"torch {torch.__version__}, {device}, {torch.get_num_threads()} CPU threads; load average "
          f"before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (shared cores: pessimistic numbers)")

    scale = profile_from_env(args.profile).train
    small = MATConfig(backbone=scale.backbone)
    rates = measure(small, scale.image_size, 8, args.repeats, channels_last=True, device=device)
    report(f"paper, {scale.backbone} {scale.image_size} px, batch 8, ch_last", rates, reference=False)

    b4 = MATConfig(backbone="efficientnet_b4")
    b = args.batch
    contiguous = measure(b4, 380, b, args.repeats, channels_last=False, agda=False, device=device)
    report(f"paper, B4 380 px, batch {b}, contiguous", contiguous, reference)
    channels_last = measure(b4, 380, b, args.repeats, channels_last=True, device=device)
    report(f"paper, B4 380 px, batch {b}, channels_last", channels_last, reference)
    speedup = {k: channels_last[k] / contiguous[k] for k in contiguous}
    print(f"{'channels_last / contiguous (paper, B4)':44s} "
          + "; ".join(f"{k} {v:.2f}x" for k, v in speedup.items()))
    if not args.skip_official:
        official = MATConfig.official(backbone="efficientnet_b4")
        report(f"official config, B4 380 px, batch {b}, contig.",
               measure(official, 380, b, max(2, args.repeats - 1), channels_last=False, device=device),
               reference)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"{time.perf_counter() - start:.0f} s in all")


if __name__ == "__main__":
    main()
