"""LAA-Net throughput: forward and train-step images/s, parameters and FLOPs.

Two settings: the profile's size (``--profile``, default from ``$DFATTN_PROFILE``/auto) and
EfficientNet-B4 at 384 px with batch 4, the official setting, compared with the official code run
in float32 on the same kind of 2-core machine (about 0.85 train-step and 3.0 forward images/s).

Variants timed: eager float32 (NCHW), channels_last, and the inference path (classification head
only) for the forward pass; on CUDA, bf16 autocast as well.

    python benchmarks/bench_laanet.py [--device cuda] [--repeats 3] [--skip-b4]
"""

from __future__ import annotations

import argparse
import time

import torch

from dfattn.config import get_profile
from dfattn.models.laanet import LAANet, LAANetConfig, laanet_loss
from dfattn.models.profile import count_flops, count_parameters

OFFICIAL_CPU = {"train": 0.85, "forward": 3.0}  # images/s, official code in float32, 384 px, batch 4


def targets(n: int, size: int, device) -> dict:
    h = size // 4
    heat = torch.zeros(n, 1, h, h, device=device)
    heat[1::2, 0, h // 3, h // 3] = 1.0
    return {"label": (torch.arange(n, device=device) % 2).float(), "heatmap": heat, "consistency": heat.clone()}


def timeit(fn, repeats: int, sync) -> float:
    fn()  # warm-up
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def bench(config: LAANetConfig, size: int, batch: int, device, repeats: int) -> dict:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    model = LAANet(config).to(device)
    x = torch.rand(batch, 3, size, size, device=device)
    y = targets(batch, size, device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    results = {}
    variants = [("fp32", torch.contiguous_format, None), ("channels_last", torch.channels_last, None)]
    if device.type == "cuda":
        variants.append(("channels_last+bf16", torch.channels_last, torch.bfloat16))
    for name, fmt, dtype in variants:
        model = model.to(memory_format=fmt)
        xs = x.contiguous(memory_format=fmt)
        amp = torch.autocast(device.type, dtype=dtype) if dtype else torch.autocast(device.type, enabled=False)

        def train_step():
            model.train()
            with amp:
                loss, _ = laanet_loss(model(xs), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        @torch.no_grad()
        def forward_all():
            model.eval()
            with amp:
                model(xs)

        @torch.no_grad()
        def forward_cls():
            model.eval()
            with amp:
                model(xs, heads=("cls",))

        results[f"train {name}"] = batch / timeit(train_step, repeats, sync)
        results[f"forward (3 heads) {name}"] = batch / timeit(forward_all, repeats, sync)
        results[f"forward (inference path) {name}"] = batch / timeit(forward_cls, repeats, sync)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-b4", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    profile = get_profile(args.profile)
    torch.manual_seed(0)

    b4 = LAANet(LAANetConfig()).eval()
    total, parts = count_flops(b4, torch.rand(1, 3, 384, 384))
    cls_only, _ = count_flops(b4, torch.rand(1, 3, 384, 384), lambda m, x: m(x, heads=("cls",)))
    print(f"LAA-Net B4 @384: {count_parameters(b4) / 1e6:.2f} M parameters, "
          f"{total / 1e9:.2f} GFLOPs (3 heads), {cls_only / 1e9:.2f} GFLOPs (inference path)")
    print("  per component (GFLOPs):", {k: round(v / 1e9, 2) for k, v in parts.items() if v})
    del b4

    settings = [(f"profile {profile.name}: {profile.backbone} @{profile.image_size}, batch "
                 f"{min(profile.batch_size, 16)}", LAANetConfig(backbone=profile.backbone),
                 profile.image_size, min(profile.batch_size, 16))]
    if not args.skip_b4:
        settings.append(("efficientnet_b4 @384, batch 4", LAANetConfig(), 384, 4))
    for title, config, size, batch in settings:
        print(f"\n{title} on {device} ({torch.get_num_threads()} threads):")
        res = bench(config, size, batch, device, args.repeats)
        for name, value in res.items():
            line = f"  {name:40s} {value:8.2f} images/s"
            if "b4" in title and device.type == "cpu":
                ref = OFFICIAL_CPU["train" if name.startswith("train") else "forward"]
                line += f"   x{value / ref:.2f} vs official fp32 ({ref})"
            print(line)


if __name__ == "__main__":
    main()
