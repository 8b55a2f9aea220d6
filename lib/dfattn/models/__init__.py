"""Models: timm backbones, LAA-Net, Multi-attentional (MAT). Never imports :mod:`dfattn.data`."""
