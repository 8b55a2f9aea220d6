"""Throughput by precision, memory format and compilation: LAA-Net, MAT and the baseline, each
beside its timm backbone alone, timed in the same run.

For each setting (the profile's size, and EfficientNet-B4 at 384 px (MAT: 380) with batch 4, the
setting of the official-code measurements) and each variant

- ``fp32``: eager float32, NCHW;
- ``cl``: channels_last (oneDNN's depthwise convolutions prefer NHWC);
- ``bf16``: ``torch.autocast("cpu", torch.bfloat16)`` (AVX-512 BF16 / AMX where the CPU has them);
- ``bf16+cl``;
- ``compile+cl`` and ``compile+bf16+cl`` with ``--compile``: ``torch.compile`` of each child module
  (:func:`dfattn.train.compile_modules`, as the trainer does; the inference path with inductor's
  freezing, BatchNorm folded),

it prints the images/s of a **train step** (the detector's own ``loss`` on a batch of real faces
and their self-blended fakes with LAA-Net's targets, backward, an Adam step; MAT's loss includes
AGDA's second pass) and of the **inference path** (``fake_logit`` without gradients), each also
as a ratio to the same run's timm backbone alone in float32 (``timm.create_model(backbone,
num_classes=1)``: BCE train step and forward). That ratio compares across machines; for B4 it
gives the load-normalised ratio to the official code measured on these 2-core machines
(``(ours / timm here) / (official / timm there)``; official, images/s: LAA-Net train 0.82 and
forward 3.0, MAT train 0.39 with AGDA and forward 2.8, timm B4 alone train 1.25, forward 3.6).

Each number is the best of ``--repeats`` timed calls after a warm-up (the least disturbed by
other processes). Run it on an otherwise idle machine::

    python benchmarks/bench_precision.py [--profile cpu] [--compile] [--skip-b4] [--models laanet mat]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable

import timm
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "lib"))

from dfattn.config import profile_from_env  # noqa: E402
from dfattn.data.datasets import PseudoFakePairs, collate_pairs  # noqa: E402
from dfattn.data.synthetic import SyntheticFaces  # noqa: E402
from dfattn.models.base import create_detector  # noqa: E402
from dfattn.train import compile_modules  # noqa: E402

OFFICIAL_B4 = {"laanet": {"train": 0.82, "infer": 3.0}, "mat": {"train": 0.39, "infer": 2.8}}
TIMM_B4_THERE = {"train": 1.25, "infer": 3.6}
VARIANTS = {  # name: (channels_last, bf16, compile)
    "fp32": (False, False, False),
    "cl": (True, False, False),
    "bf16": (False, True, False),
    "bf16+cl": (True, True, False),
    "compile+cl": (True, False, True),
    "compile+bf16+cl": (True, True, True),
}


def machine() -> str:
    name = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
        flags = Path("/proc/cpuinfo").read_text().split("flags", 2)[1].splitlines()[0]
        isa = [f for f in ("avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni") if f in flags.split()]
    except (OSError, IndexError):
        isa = []
    return f"{name}, {os.cpu_count()} cores, {' '.join(isa) or 'no AVX-512'}"


def best_rate(fn: Callable[[], None], images: int, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return images / best


def batch_of(size: int, n_images: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Real faces and their SBI pseudo-fakes with LAA-Net's targets, as the trainer feeds them."""
    faces = SyntheticFaces(n_images // 2, max(size, 160), seed=seed)
    pairs = PseudoFakePairs(faces, size, train=True, seed=seed)
    return collate_pairs([pairs[i] for i in range(n_images // 2)])


def measure(make: Callable[[], torch.nn.Module], kind: str, batch: dict[str, torch.Tensor], variant: str,
            repeats: int) -> dict[str, float]:
    """Train-step and inference images/s of a fresh model in one variant."""
    channels_last, bf16, compiled = VARIANTS[variant]
    torch.manual_seed(0)
    model = make()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    x = batch["image"].contiguous(memory_format=fmt)
    data = {**batch, "image": x}
    amp = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    label = batch["label"]
    if kind == "timm":
        train_loss = lambda: F.binary_cross_entropy_with_logits(model(x)[:, 0], label)  # noqa: E731
        infer = lambda: model(x)  # noqa: E731
    else:
        train_loss = lambda: model.loss(data)[0]  # noqa: E731
        infer = lambda: model.fake_logit(x)  # noqa: E731
    if compiled:
        if kind == "timm":
            model.compile()
        else:
            compile_modules(model)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def step() -> None:
        model.train()
        with amp():
            loss = train_loss()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    n = len(x)
    out = {"train": best_rate(step, n, repeats)}
    model.eval()
    if compiled:  # a separate no-grad graph, with BatchNorm folded and weights pre-packed
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
    with torch.no_grad(), amp():
        out["infer"] = best_rate(infer, n, repeats)
    if compiled:
        inductor_config.freezing = False
        torch._dynamo.reset()
    return out


def bench(setting: str, backbone: str, size: int, batch_size: int, models: list[str], variants: list[str],
          repeats: int, mat_size: int | None = None) -> dict:
    print(f"\n{setting}: {backbone}, {size} px (MAT {mat_size or size}), batch {batch_size}; images/s, "
          f"and / timm {backbone} alone in fp32", flush=True)
    batches = {s: batch_of(s, batch_size) for s in {size, mat_size or size}}
    results: dict[str, dict[str, dict[str, float]]] = {}
    makers = {"timm": lambda: timm.create_model(backbone, pretrained=False, num_classes=1)}
    for name in models:
        makers[name] = (lambda name=name: create_detector(name, backbone=backbone, pretrained=False))
    for name, make in makers.items():
        s = mat_size if (name == "mat" and mat_size) else size
        for variant in variants:
            start = time.perf_counter()
            try:
                r = measure(make, "timm" if name == "timm" else name, batches[s], variant, repeats)
            except Exception as error:  # e.g. no compiler for inductor: report, keep the rest
                print(f"  {name:9s} {variant:16s} FAILED {type(error).__name__}: {str(error).splitlines()[0][:160]}")
                continue
            results.setdefault(name, {})[variant] = r
            ref = results.get("timm", {}).get("fp32")
            rel = "" if ref is None else (f"   x{r['train'] / ref['train']:.2f} / x{r['infer'] / ref['infer']:.2f} timm")
            print(f"  {name:9s} {variant:16s} train {r['train']:7.2f}   infer {r['infer']:7.2f}{rel}"
                  f"   ({time.perf_counter() - start:.0f} s)", flush=True)
    return results


def summary(results: dict, b4: bool) -> None:
    """Speed-ups over fp32 per model, and (B4) the load-normalised ratios to the official code."""
    for name, by_variant in results.items():
        base = by_variant.get("fp32")
        if not base:
            continue
        ups = "  ".join(f"{v} x{r['train'] / base['train']:.2f}/x{r['infer'] / base['infer']:.2f}"
                        for v, r in by_variant.items() if v != "fp32")
        print(f"  {name:9s} over fp32 (train/infer): {ups}")
    timm_ref = results.get("timm", {}).get("fp32")
    if not b4 or not timm_ref:
        return
    print("  vs the official code, load-normalised ((ours / timm here) / (official / timm there)):")
    for name in ("laanet", "mat"):
        for variant, r in results.get(name, {}).items():
            ratios = [(r[k] / timm_ref[k]) / (OFFICIAL_B4[name][k] / TIMM_B4_THERE[k]) for k in ("train", "infer")]
            print(f"    {name:7s} {variant:16s} train x{ratios[0]:.2f}   infer x{ratios[1]:.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default=None)
    p.add_argument("--models", nargs="+", default=["laanet", "mat", "baseline"])
    p.add_argument("--variants", nargs="+", default=None, choices=list(VARIANTS))
    p.add_argument("--compile", action="store_true", help="also the compiled variants (minutes each)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip-b4", action="store_true")
    p.add_argument("--skip-profile", action="store_true")
    args = p.parse_args()
    variants = args.variants or [v for v in VARIANTS if args.compile or not VARIANTS[v][2]]
    profile = profile_from_env(args.profile)
    load = os.getloadavg()[0]
    print(f"{machine()}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average {load:.2f} at the start")
    start = time.perf_counter()
    if not args.skip_profile:
        t = profile.train
        res = bench(f"profile {profile.name}", t.backbone, t.image_size, t.batch_size, args.models, variants,
                    args.repeats)
        summary(res, b4=False)
    if not args.skip_b4:
        res = bench("paper scale", "efficientnet_b4", 384, 4, args.models, variants, args.repeats, mat_size=380)
        summary(res, b4=True)
    print(f"\n{(time.perf_counter() - start) / 60:.1f} min; load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
