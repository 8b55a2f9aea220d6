"""Training throughput of the trainer: train-step images per second for each detector, and
data-loading pairs per second, at a profile's size (issue "Training and evaluation").

Run as ``python benchmarks/bench_train.py [--profile cpu] [--steps 5] [--workers 1]``. The step
is the trainer's own (``Trainer`` with the profile's recipe: SAM where the recipe uses it,
channels_last, bf16 autocast on GPU), on one fixed batch, best of ``--repeats``; data loading is
``PseudoFakePairs`` through the trainer's DataLoader, timed without the model. Prints
throughput and the ratio of each model to the baseline.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "lib"))

from dfattn.optim import SAM, frozen_bn_statistics  # noqa: E402
from dfattn.train import TrainConfig, Trainer  # noqa: E402


def step_throughput(trainer: Trainer, batch: dict, steps: int, repeats: int) -> float:
    model, opt = trainer.model, trainer.optimizer
    model.train()
    batch = {k: v.to(trainer.device) for k, v in batch.items()}
    if trainer.config.channels_last:
        batch["image"] = batch["image"].contiguous(memory_format=torch.channels_last)

    def one() -> None:
        with torch.autocast(trainer.device.type, dtype=trainer.amp) if trainer.amp else torch.enable_grad():
            loss, _ = model.loss(batch)
        loss.backward()
        if isinstance(opt, SAM):
            opt.first_step()
            with frozen_bn_statistics(model):
                model.loss(batch)[0].backward()
            opt.second_step()
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)

    one()  # warm-up
    best = 0.0
    for _ in range(repeats):
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            one()
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        best = max(best, steps * len(batch["image"]) / (time.perf_counter() - start))
    return best


def loading_throughput(trainer: Trainer, batches: int) -> float:
    it = iter(trainer.loader)
    next(it)  # workers started
    start = time.perf_counter()
    pairs = 0
    for _ in range(batches):
        try:
            pairs += len(next(it)["image"]) // 2
        except StopIteration:
            break
    return pairs / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default=None)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--models", nargs="+", default=["laanet", "mat", "baseline"])
    args = p.parse_args()
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            cfg = TrainConfig(model=name, profile=args.profile, progress=False, num_workers=args.workers,
                              n_train=256, n_val=8, n_test=8, val_families=False, pretrained=False)
            trainer = Trainer(cfg, Path(tmp) / name)
            c = trainer.config
            if name == args.models[0]:
                batches = max(2, 64 // (c.batch_size // 2))
                print(f"profile {c.profile}: {c.backbone} at {c.image_size} px, batch {c.batch_size} images, "
                      f"device {trainer.device}, {torch.get_num_threads()} threads")
                rate = loading_throughput(trainer, batches)
                print(f"data loading ({c.blend.upper()} pairs + targets, {c.num_workers} workers): {rate:.1f} pairs/s "
                      f"= {2 * rate:.1f} images/s")
            batch = next(iter(trainer.loader))
            rates[name] = step_throughput(trainer, batch, args.steps, args.repeats)
            sam = " (SAM: two passes)" if c.sam else ""
            print(f"{name:9s} train step: {rates[name]:7.1f} images/s{sam}")
    if "baseline" in rates:
        for name, rate in rates.items():
            print(f"{name:9s} / baseline: {rate / rates['baseline']:.2f}x")


if __name__ == "__main__":
    main()
