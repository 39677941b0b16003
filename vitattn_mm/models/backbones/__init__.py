from .cbvit import CBViT
from .lavit import LaViT

__all__ = ['CBViT', 'LaViT']
