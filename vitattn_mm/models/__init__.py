from .backbones import CBViT, LaViT
from .losses import DiagonalityPreservingLoss

__all__ = ['CBViT', 'DiagonalityPreservingLoss', 'LaViT']
