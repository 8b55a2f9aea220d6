"""LAA-Net throughput: forward and train-step images/s, parameters and FLOPs.

Two settings: the profile's size (``--profile``, default from ``$DFATTN_PROFILE``/auto) and
EfficientNet-B4 at 384 px with batch 4, the official setting. On CPU the B4 numbers are compared
with the official code run in float32 on a 2-core machine (0.85 train-step and 3.0 forward
images/s; timm's B4 classifier alone: 1.25 and 3.6). Shared or different cores shift all numbers
roughly alike, so timm's B4 is timed in the same run and a *load-normalised* ratio is printed too:
``(ours / timm B4 here) / (official / timm B4 there)``.

Variants: eager float32 in NCHW and in channels_last (oneDNN's depthwise convolutions are faster
in NHWC), the inference path (classification head only), and with
``--compile inference`` ``torch.compile`` of the channels_last model's no-grad forward passes with
inductor's freezing (BatchNorm folded into the convolutions, weights pre-packed), or with
``--compile all`` also of the train step (compiling B4's backward takes minutes on 2 cores); on
CUDA also bf16 autocast.

    python benchmarks/bench_laanet.py [--device cuda] [--repeats 3] [--skip-b4] [--compile inference]

What we measured (B4, 384 px, batch 4, float32, 2 cores; ``benchmarks/results/``): channels_last
+20-40 % for training and forward passes; the inference path (classification head only, 13.9
instead of 16.6 GFLOPs) +15-35 % over the three-head forward; ``torch.compile`` on top of
channels_last +10 % (three heads) to +27 % (inference path, inductor freezing) after 30-100 s
of compiling, and +26 % for the train step after about 5 minutes of compiling.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Callable

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dfattn.config import profile_from_env
from dfattn.models.laanet import LAANet, LAANetConfig, laanet_loss
from dfattn.models.flops import count_flops, count_parameters

# images/s on a 2-core CPU in float32, 384 px, batch 4 (measured with the official code and timm)
OFFICIAL_CPU = {"train": 0.85, "forward": 3.0}
TIMM_B4_CPU = {"train": 1.25, "forward": 3.6}


def targets(n: int, size: int, device: torch.device) -> dict[str, Tensor]:
    """A batch of alternating real/fake labels with a one-point heatmap and consistency target."""
    h = size // 4
    heat = torch.zeros(n, 1, h, h, device=device)
    heat[1::2, 0, h // 3, h // 3] = 1.0
    return {"label": (torch.arange(n, device=device) % 2).float(), "heatmap": heat,
            "consistency": heat.clone()}


def timeit(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> float:
    """Best wall time of ``repeats`` calls after one warm-up (the minimum is the least disturbed
    by other processes on shared cores)."""
    fn()
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def bench_model(model: nn.Module, loss_fn: Callable[[object], Tensor], x: Tensor, repeats: int,
                forwards: dict[str, Callable[[nn.Module, Tensor], object]], compile: str = "none",
                amp_dtype: torch.dtype | None = None) -> dict[str, float]:
    """images/s of one train step (forward, loss, backward, Adam) and of each no-grad forward.

    ``compile``: ``"none"``, ``"inference"`` (the forwards) or ``"all"`` (the train step too).
    """
    device = x.device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    amp = lambda: torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None)  # noqa: E731
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    train_model = torch.compile(model) if compile == "all" else model
    results = {}

    def train_step() -> None:
        model.train()
        with amp():
            loss = loss_fn(train_model(x))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    start = time.perf_counter()
    if compile != "inference":  # else the same eager train step as without compile
        results["train"] = x.shape[0] / timeit(train_step, repeats, sync)
    if compile == "all":
        print(f"    (train: compile + timing {time.perf_counter() - start:.0f} s)", flush=True)
    model.eval()
    for name, forward in forwards.items():
        run = forward
        if compile != "none":
            import torch._inductor.config as inductor_config

            inductor_config.freezing = True  # fold BN into convs, pre-pack weights (no-grad graphs)
            run = torch.compile(forward)
        with torch.no_grad(), amp():
            start = time.perf_counter()
            results[f"forward {name}"] = x.shape[0] / timeit(lambda: run(model, x), repeats, sync)
        if compile != "none":
            print(f"    (forward {name}: compile + timing {time.perf_counter() - start:.0f} s)", flush=True)
            torch._dynamo.reset()
    return results


def variants(device: torch.device, compile: str) -> list[tuple[str, torch.memory_format, str, torch.dtype | None]]:
    """(name, memory format, what to compile, autocast dtype) of each timed variant."""
    out = [("fp32 NCHW", torch.contiguous_format, "none", None),
           ("channels_last", torch.channels_last, "none", None)]
    if compile != "none":
        out.append(("channels_last+compile", torch.channels_last, compile, None))
    if device.type == "cuda":
        out.append(("channels_last+bf16", torch.channels_last, "none", torch.bfloat16))
    return out


def bench_laanet(config: LAANetConfig, size: int, batch: int, device: torch.device, repeats: int,
                 compile: str) -> dict[str, dict[str, float]]:
    torch.manual_seed(0)
    model = LAANet(config).to(device)
    y = targets(batch, size, device)
    forwards = {"(3 heads)": lambda m, x: m(x), "(inference path)": lambda m, x: m(x, heads=("cls",))}
    out = {}
    for name, fmt, comp, dtype in variants(device, compile):
        model = model.to(memory_format=fmt)
        x = torch.rand(batch, 3, size, size, device=device).contiguous(memory_format=fmt)
        try:
            out[name] = bench_model(model, lambda o: laanet_loss(o, y)[0], x, repeats, forwards, comp, dtype)
        except Exception as error:  # e.g. no C++ compiler for inductor: report, keep the other variants
            print(f"  {name:24s}  FAILED: {type(error).__name__}: {str(error).splitlines()[0][:200]}")
            continue
        print(f"  {name:24s}" + "".join(f"  {k} {v:6.2f}" for k, v in out[name].items()), flush=True)
    return out


def bench_timm_b4(device: torch.device, repeats: int) -> dict[str, dict[str, float]]:
    """timm's B4 classifier alone at 384 px, batch 4 (the reference point of the official numbers)."""
    torch.manual_seed(0)
    model = timm.create_model("efficientnet_b4").to(device)
    label = torch.arange(4, device=device) % 2
    out = {}
    for name, fmt, _, _ in variants(device, "none")[:2]:
        model = model.to(memory_format=fmt)
        x = torch.rand(4, 3, 384, 384, device=device).contiguous(memory_format=fmt)
        out[name] = bench_model(model, lambda o: F.cross_entropy(o, label), x, repeats,
                                {"": lambda m, x: m(x)})
        print(f"  {name:24s}" + "".join(f"  {k} {v:6.2f}" for k, v in out[name].items()), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-b4", action="store_true")
    parser.add_argument("--compile", choices=("none", "inference", "all"), default="none",
                        help="also time torch.compile'd variants (inference only, or the train step too)")
    args = parser.parse_args()
    device = torch.device(args.device)
    profile = profile_from_env(args.profile)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {load:.2f}")

    with torch.device("meta"):  # counting needs shapes only: instant, no weights
        b4 = LAANet(LAANetConfig()).eval()
    x = torch.empty(1, 3, 384, 384, device="meta")
    total, parts = count_flops(b4, x)
    cls_only, _ = count_flops(b4, x, lambda m, x: m(x, heads=("cls",)))
    print(f"LAA-Net B4 @384: {count_parameters(b4) / 1e6:.2f} M parameters, "
          f"{total / 1e9:.2f} GFLOPs (3 heads), {cls_only / 1e9:.2f} GFLOPs (inference path)")
    print("  per component (GFLOPs):", {k: round(v / 1e9, 2) for k, v in parts.items() if v})

    size, batch = profile.train.image_size, min(profile.train.batch_size, 16)
    print(f"\nprofile {profile.name}: {profile.train.backbone} @{size}, batch {batch} on {device} (images/s):")
    bench_laanet(LAANetConfig(backbone=profile.train.backbone), size, batch, device, args.repeats, args.compile)
    if args.skip_b4:
        return
    print(f"\nefficientnet_b4 @384, batch 4 on {device} (images/s):")
    ours = bench_laanet(LAANetConfig(), 384, 4, device, args.repeats, args.compile)
    if device.type != "cpu":
        return
    print("\ntimm efficientnet_b4 classifier alone @384, batch 4 (images/s):")
    ref = bench_timm_b4(device, args.repeats)["fp32 NCHW"]
    here = {"train": ref["train"], "forward": ref["forward "]}
    print(f"\nvs the official code in float32 (train {OFFICIAL_CPU['train']}, forward "
          f"{OFFICIAL_CPU['forward']} images/s); 'normalised' rescales by timm's B4 here/there:")
    for variant, res in ours.items():
        for name, value in res.items():
            kind = "train" if name == "train" else "forward"
            raw = value / OFFICIAL_CPU[kind]
            normalised = (value / here[kind]) / (OFFICIAL_CPU[kind] / TIMM_B4_CPU[kind])
            print(f"  {variant:24s} {name:26s} x{raw:5.2f} raw   x{normalised:5.2f} normalised")


if __name__ == "__main__":
    main()
