"""Context broadcasting (CB), Hyeon-Woo et al., "Scratching Visual Transformer's Back with Uniform Attention",
ICCV 2023."""
import torch
import torch.nn as nn


class ContextBroadcast(nn.Module):
    """Adds uniform attention after an MLP: ``x <- 0.5 * x + 0.5 * mean_tokens(x)``.

    The paper's one-liner; the mean runs over every token of the sequence (the class token included, as in
    the paper's ViT). No parameters, so a ViT/DeiT checkpoint loads unchanged.

    With ``learnable_scale=True`` the broadcast context is scaled per channel,
    ``x <- 0.5 * x + 0.5 * w * mean_tokens(x)``, ``w`` initialised to ones so that training starts from plain
    CB (the paper's variant with a learned per-channel weight; this parametrisation is our choice).

    Args:
        dim: channels, needed only with ``learnable_scale``.
        learnable_scale: learn the per-channel weight ``w``.
    """

    def __init__(self, dim: int = 0, learnable_scale: bool = False):
        super().__init__()
        if learnable_scale and dim <= 0:
            raise ValueError('ContextBroadcast(learnable_scale=True) needs the channel count `dim`')
        self.scale = nn.Parameter(torch.ones(dim)) if learnable_scale else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        context = x.mean(dim=1, keepdim=True)
        if self.scale is not None:
            context = context * self.scale
        return 0.5 * x + 0.5 * context

    def extra_repr(self) -> str:
        return f'learnable_scale={self.scale is not None}'
