"""Registries. One registration serves every toolbox that is installed.

Our classes are registered in our own registries (children of mmengine's roots, scope ``vitattn_mm``) and in
mmdet's, mmseg's and mmpretrain's registries when those packages are importable, so ``dict(type='LaViT')`` builds
in an mmdet, mmseg or mmpretrain config, or from ``vitattn_mm.registry.MODELS`` directly, with any of the toolboxes
installed alone. (mmpretrain's backbones return a tuple of feature maps, as ours do, so its ``ImageClassifier``
with ``GlobalAveragePooling`` and ``LinearClsHead`` classifies from the last one.)
"""
import importlib
from typing import List, Type

from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='vitattn_mm', locations=['vitattn_mm.models'])
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, scope='vitattn_mm', locations=['vitattn_mm.engine'])

TOOLBOXES = ('mmdet', 'mmseg', 'mmpretrain')


def _toolbox_registries(name: str) -> List[Registry]:
    registries = []
    for toolbox in TOOLBOXES:
        try:
            module = importlib.import_module(f'{toolbox}.registry')
        except ImportError:
            continue
        registries.append(getattr(module, name))
    return registries


def _register(own: Registry, name: str):

    def decorator(cls: Type) -> Type:
        own.register_module(module=cls)
        for registry in _toolbox_registries(name):
            registry.register_module(module=cls)
        return cls

    return decorator


register_model = _register(MODELS, 'MODELS')
register_hook = _register(HOOKS, 'HOOKS')
