"""dfattn: attention-based deepfake detection (LAA-Net and Multi-attentional), as a research book.

Sub-packages, bottom up: :mod:`dfattn.config` (run profiles, seeding, devices);
:mod:`dfattn.data` (faces, blending, targets, held-out manipulations, datasets) and
:mod:`dfattn.models` (backbones, LAA-Net, MAT), which never import each other.
"""

__version__ = "0.1.0"
