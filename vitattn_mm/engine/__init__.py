from .hooks import AuxiliaryLossHook, RandomStateHook

__all__ = ['AuxiliaryLossHook', 'RandomStateHook']
