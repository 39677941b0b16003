from .hooks import AuxiliaryLossHook, ResumableCheckpointHook

__all__ = ['AuxiliaryLossHook', 'ResumableCheckpointHook']
