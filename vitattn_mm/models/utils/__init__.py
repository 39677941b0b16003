from .checkpoint import CheckpointMismatchError, load_matching_state, load_pretrained
from .tokens import map_to_tokens, tokens_to_map

__all__ = ['CheckpointMismatchError', 'load_matching_state', 'load_pretrained', 'map_to_tokens', 'tokens_to_map']
