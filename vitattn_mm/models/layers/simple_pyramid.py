"""Feature pyramid from a single stride-16 map, for plain ViTs (ViTDet, Li et al. 2022)."""
from typing import List

import torch
import torch.nn as nn


class SimpleFeaturePyramid(nn.Module):
    """Turns the stride-16 map of a plain ViT into maps at strides 4, 8, 16 and 32.

    As ViTDet: stride 4 by two 2x2 transposed convolutions (with LayerNorm-over-channels and GELU between them),
    stride 8 by one, stride 16 unchanged, stride 32 by 2x2 max pooling. Channels ``dim // 4, dim // 2, dim, dim``;
    the detector's FPN or the segmentor's head then brings them to a common width, so, unlike ViTDet, we add no
    convolutions of our own after the resampling.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.out_channels = [dim // 4, dim // 2, dim, dim]
        self.up4 = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 2, 2, 2), ChannelLayerNorm(dim // 2), nn.GELU(),
            nn.ConvTranspose2d(dim // 2, dim // 4, 2, 2))
        self.up2 = nn.ConvTranspose2d(dim, dim // 2, 2, 2)
        self.down2 = nn.MaxPool2d(2, 2, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        return [self.up4(x), self.up2(x), x, self.down2(x)]


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
