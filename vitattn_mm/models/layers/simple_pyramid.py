"""Feature pyramid from a single stride-16 map, for plain ViTs (ViTDet, Li et al. 2022)."""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

PYRAMID_STRIDES = (4, 8, 16, 32)


class SimpleFeaturePyramid(nn.Module):
    """Turns the stride-16 map of a plain ViT into maps at strides 4, 8, 16 and 32.

    As ViTDet: stride 4 by two 2x2 transposed convolutions (with LayerNorm-over-channels and GELU between them),
    stride 8 by one, stride 16 unchanged, stride 32 by 2x2 max pooling. Channels ``dim // 4, dim // 2, dim, dim``;
    the detector's FPN or the segmentor's head then brings them to a common width, so, unlike ViTDet, we add no
    convolutions of our own after the resampling.

    Alignment with the image (our design): the stride-16 map comes from an image padded at the bottom and right to
    a multiple of 16, so upsampling it gives levels of the *padded* size (a 401x613 image: 104x156 at stride 4).
    Heads that resize their output to the image (mmseg's decode heads) would then stretch the padded border over
    the image. Given ``image_size``, every level at stride ``s`` is cropped to ``ceil(H / s) x ceil(W / s)``,
    keeping the top-left cells, i.e. exactly the cells that cover image pixels, as a pyramid backbone with
    ceil-mode strided stages (PVTv2, LaViT) produces them. Levels at strides 16 and 32 have that size already.
    """

    strides = PYRAMID_STRIDES

    def __init__(self, dim: int):
        super().__init__()
        self.out_channels = [dim // 4, dim // 2, dim, dim]
        self.up4 = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 2, 2, 2), ChannelLayerNorm(dim // 2), nn.GELU(),
            nn.ConvTranspose2d(dim // 2, dim // 4, 2, 2))
        self.up2 = nn.ConvTranspose2d(dim, dim // 2, 2, 2)
        self.down2 = nn.MaxPool2d(2, 2, ceil_mode=True)

    def forward(self, x: torch.Tensor, image_size: Optional[Tuple[int, int]] = None,
                levels: Sequence[int] = (0, 1, 2, 3)) -> List[torch.Tensor]:
        """``x``: the (B, C, h, w) stride-16 map; ``image_size``: (H, W) of the unpadded image, to crop to;
        ``levels``: the levels to compute and return, in this order (0: stride 4 ... 3: stride 32)."""
        make = (self.up4, self.up2, nn.Identity(), self.down2)
        outs = [make[i](x) for i in levels]
        if image_size is None:
            return outs
        return [crop_to_image(out, image_size, self.strides[i]) for out, i in zip(outs, levels)]


def crop_to_image(level: torch.Tensor, image_size: Tuple[int, int], stride: int) -> torch.Tensor:
    """The top-left ``ceil(H / stride) x ceil(W / stride)`` cells of a (B, C, h, w) map: those covering an
    ``H x W`` image. Raises if the map is smaller than that (it would not cover the image)."""
    h, w = (-(-s // stride) for s in image_size)
    if level.shape[2] < h or level.shape[3] < w:
        raise ValueError(f'a stride-{stride} map of {level.shape[2]}x{level.shape[3]} cells cannot cover a '
                         f'{image_size[0]}x{image_size[1]} image (needs {h}x{w})')
    if (level.shape[2], level.shape[3]) == (h, w):
        return level
    return level[:, :, :h, :w]


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
