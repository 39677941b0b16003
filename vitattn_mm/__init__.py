"""LaViT and CB-ViT backbones for MMDetection and MMSegmentation.

``import vitattn_mm`` (or ``custom_imports=dict(imports=['vitattn_mm'])`` in a config) registers the backbones,
the diagonality-preserving loss and the auxiliary-loss hook in mmdet's and mmseg's registries.
"""
from .utils.compat import allow_mmengine_checkpoint_globals

allow_mmengine_checkpoint_globals()

from . import engine, models  # noqa: E402,F401  (registers everything)
from .models import CBViT, DiagonalityPreservingLoss, LaViT  # noqa: E402

__version__ = '0.1.0'
__all__ = ['CBViT', 'DiagonalityPreservingLoss', 'LaViT', '__version__']
