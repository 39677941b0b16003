from .hooks import AuxiliaryLossHook

__all__ = ['AuxiliaryLossHook']
