"""Per-frame CNN.

Shapes: N frames, H x W pixels, 3 RGB channels, D = d_model.
"""

from __future__ import annotations

import torch
from torch import nn

_CHANNELS = (16, 32, 64, 128)
_MEAN = 0.5
_STD = 0.25


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1, bias=False),
        nn.GroupNorm(min(8, c_out // 4), c_out),
        nn.GELU(),
    )


class VideoEncoder(nn.Module):
    """uint8 ``[N, H, W, 3]`` -> ``[N, D]``.

    Scales to [0, 1], adds a colour- and polarity-free shape channel, then four stride-2
    3x3 conv blocks
    (GroupNorm, GELU), a global average pool and a linear projection. Any H, W works.
    """

    def __init__(self, d_model: int) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        c_in = 4  # the shape channel + RGB
        for c_out in _CHANNELS:
            blocks.append(_block(c_in, c_out))
            c_in = c_out
        self.convs = nn.Sequential(*blocks)
        self.proj = nn.Linear(c_in, d_model)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        if frames.dim() != 4 or frames.shape[-1] != 3:
            raise ValueError(f"VideoEncoder expects [N, H, W, 3], got {tuple(frames.shape)}")
        if frames.dtype != torch.uint8:
            raise ValueError(f"VideoEncoder expects uint8 frames, got {frames.dtype}")
        x = frames.float()  # [N, H, W, 3], 0 .. 255
        # Shape, not colour: the distance of each pixel's grey level (0 .. 1) from the
        # frame's mean, over its standard deviation, so a light digit on a dark background
        # and a dark one on a light background look alike and the background's hue drops out.
        # In place where nothing else reads; the deviation from plain sums, which cost a
        # fraction of Tensor.std here.
        grey = (x[..., 0] + x[..., 1] + x[..., 2]).mul_(1 / (3 * 255))  # [N, H, W]
        dev = grey.sub_(grey.mean(dim=(1, 2), keepdim=True)).abs_()
        centred = dev - dev.mean(dim=(1, 2), keepdim=True)
        pixels = x.shape[1] * x.shape[2]
        std = centred.square_().sum(dim=(1, 2), keepdim=True).div_(pixels - 1).sqrt_()
        shape = dev.div_(std.add_(1e-3)).sub_(1.0)  # [N, H, W]
        rgb = x.mul_(1 / (255 * _STD)).sub_(_MEAN / _STD)  # (x / 255 - _MEAN) / _STD
        x = torch.cat([shape.unsqueeze(1), rgb.permute(0, 3, 1, 2)], dim=1)  # [N, 4, H, W]
        x = self.convs(x)  # [N, C, H / 16, W / 16]
        pooled = x.mean(dim=(2, 3))  # [N, C]
        out: torch.Tensor = self.proj(pooled)  # [N, D]
        return out
