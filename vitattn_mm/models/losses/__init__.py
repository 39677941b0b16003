from .diagonality_loss import DiagonalityPreservingLoss, diagonality_terms

__all__ = ['DiagonalityPreservingLoss', 'diagonality_terms']
