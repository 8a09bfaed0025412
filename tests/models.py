"""Small PyTorch modules exported to ONNX by the graph tests.

They cover the op families real models bring beyond the zoo's CNNs: depthwise convs,
ReLU6 (Clip) and residuals (MobileNetV2-like), attention with explicit heads (MatMul,
Softmax, LayerNorm, Reshape/Transpose, GELU), and down/up sampling with skip Concats
(U-Net-like). ``export`` uses PyTorch's TorchScript exporter (``dynamo=False``): it
works offline with torch 2.13, whereas the default dynamo exporter needs
``onnxscript``, which the project does not depend on.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import torch
from torch import nn


class TinyConvNet(nn.Module):
    """Conv-BN-ReLU, max pool, global pool, Linear: the smallest realistic CNN."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.bn(self.conv(x))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 project, residual if shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.residual = stride == 1 and cin == cout
        self.body = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class MobileNetV2Like(nn.Module):
    """Stem, four inverted-residual blocks (two with residuals), pool, classifier."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6())
        self.blocks = nn.Sequential(
            InvertedResidual(16, 24, 2, 4),
            InvertedResidual(24, 24, 1, 4),
            InvertedResidual(24, 32, 2, 4),
            InvertedResidual(32, 32, 1, 4),
        )
        self.head = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.head(x.mean(dim=(2, 3)))


class Attention(nn.Module):
    """Multi-head self-attention with the heads split by hand (Reshape + Transpose)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        dh = d // self.heads

        def split(z: torch.Tensor) -> torch.Tensor:
            return z.reshape(b, t, self.heads, dh).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(dh), dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, t, d)
        return self.out(y)


class TinyTransformer(nn.Module):
    """Two pre-norm encoder layers (attention + GELU MLP) over a (B, T, D) input."""

    def __init__(self, dim: int = 32, heads: int = 4, layers: int = 2):
        super().__init__()
        self.layers = nn.ModuleList()
        for _ in range(layers):
            self.layers.append(nn.ModuleDict({
                "ln1": nn.LayerNorm(dim), "att": Attention(dim, heads),
                "ln2": nn.LayerNorm(dim),
                "mlp": nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)),
            }))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = x + layer["att"](layer["ln1"](x))
            x = x + layer["mlp"](layer["ln2"](x))
        return self.norm(x)


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU())


class TinyUNet(nn.Module):
    """Two levels down (max pool), up once by ConvTranspose and once by Resize, skip Concats."""

    def __init__(self, cin: int = 3, classes: int = 2):
        super().__init__()
        self.enc1 = _double_conv(cin, 8)
        self.enc2 = _double_conv(8, 16)
        self.mid = _double_conv(16, 32)
        self.up2 = nn.ConvTranspose2d(32, 16, 2, stride=2)
        self.dec2 = _double_conv(32, 16)
        self.dec1 = _double_conv(16 + 8, 8)
        self.head = nn.Conv2d(8, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(nn.functional.max_pool2d(e1, 2))
        m = self.mid(nn.functional.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(m), e2], dim=1))
        up1 = nn.functional.interpolate(d2, scale_factor=2.0, mode="bilinear", align_corners=False)
        d1 = self.dec1(torch.cat([up1, e1], dim=1))
        return self.head(d1)


def export(
    module: nn.Module,
    example: torch.Tensor,
    path: Path,
    *,
    opset: int | None = None,
    dynamic_batch: bool = False,
) -> Path:
    """Export ``module`` (in eval mode) to ``path`` with the TorchScript exporter.

    Args:
        module: the module; its weights are seeded by the caller.
        example: one example input.
        path: where to write the ``.onnx`` file.
        opset: ONNX opset; ``None`` takes the exporter's default.
        dynamic_batch: make dimension 0 of the input and output symbolic ("batch").
    """
    module.eval()
    kwargs: dict = {"input_names": ["x"], "output_names": ["y"], "dynamo": False}
    if opset is not None:
        kwargs["opset_version"] = opset
    if dynamic_batch:
        kwargs["dynamic_axes"] = {"x": {0: "batch"}, "y": {0: "batch"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated, and says so
        torch.onnx.export(module, (example,), str(path), **kwargs)
    return path
