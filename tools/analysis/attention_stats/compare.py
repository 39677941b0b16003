"""The comparisons: LaViT against its all-VA variant, CB-ViT with context broadcasting on and off."""
import copy
import math
import pickle
from collections import OrderedDict
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from .capture import lavit_attention, vit_attention
from .row_stats import Meter, density_stats, pooled_stats, row_cosine, row_tv


def lavit_measure(meter: Meter, variant: str, records: Dict[Tuple[int, int], dict],
                  num_vanilla: Sequence[int]) -> None:
    stages = sorted({s for s, _ in records})
    for s in stages:
        layers = sorted(l for (t, l) in records if t == s)
        ref = num_vanilla[s] - 1  # the last VA layer of the stage in the LaViT architecture
        for l in layers:
            rec = records[(s, l)]
            meter.add(variant, s, l, None, rec['kind'], density_stats(rec['probs']))
            meter.add(variant, s, l, None, rec['kind'], pooled_stats(rec['square']))
            if l > 0:
                prev = records[(s, l - 1)]
                pair = f'{prev["kind"]}->{rec["kind"]}'
                meter.add(variant, s, l, l - 1, pair, {
                    'cos_consecutive': row_cosine(prev['probs'], rec['probs']).mean().item(),
                    'ccos_consecutive': row_cosine(prev['probs'], rec['probs'], centre=True).mean().item(),
                })
            if l > ref:
                base = records[(s, ref)]['probs']
                meter.add(variant, s, l, ref, rec['kind'], {
                    'cos_to_last_va': row_cosine(base, rec['probs']).mean().item(),
                    'ccos_to_last_va': row_cosine(base, rec['probs'], centre=True).mean().item(),
                    'tv_to_last_va': row_tv(base, rec['probs']).mean().item(),
                })


def load_backbone_state(path: str, unsafe_load: bool) -> Dict[str, torch.Tensor]:
    """The ``backbone.*`` tensors of a detector/segmentor checkpoint (prefix removed), or a backbone-only one."""
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=not unsafe_load)
    except pickle.UnpicklingError as exc:
        raise SystemExit(f"{path}: torch's safe loader refuses it ({str(exc).splitlines()[-1][:160]}); if you trust "
                         'the file, re-run with --unsafe-load') from None
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else ckpt
    if any(k.startswith('backbone.') for k in state):
        state = {k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')}
    return state


def build_all_va(backbone, cfg, scope: str, seed: int, checkpoint: Optional[str] = None,
                 unsafe_load: bool = False) -> Tuple[nn.Module, str]:
    """The same LaViT with every layer vanilla; weights copied from ``backbone`` where names and shapes match,
    or loaded from ``checkpoint`` (a trained all-VA model)."""
    if scope == 'mmdet':
        from mmdet.registry import MODELS
    else:
        from mmseg.registry import MODELS
    arch = copy.deepcopy(backbone.arch)
    arch['num_vanilla'] = list(arch['depths'])
    bb_cfg = copy.deepcopy(cfg.model.backbone)
    bb_cfg.update(arch=arch, dp_loss=None, init_cfg=None)
    torch.manual_seed(seed + 1)
    all_va = MODELS.build(bb_cfg)
    all_va.init_weights()
    if checkpoint:
        state = load_backbone_state(checkpoint, unsafe_load)
        result = all_va.load_state_dict(state, strict=False)
        bad = [k for k, v in state.items() if k in all_va.state_dict() and all_va.state_dict()[k].shape != v.shape]
        if result.missing_keys or bad:
            raise SystemExit(f'--all-va-checkpoint {checkpoint} does not fit an all-VA version of {backbone.arch}: '
                             f'{len(result.missing_keys)} missing tensors ({_summarise_keys(result.missing_keys)})')
        all_va.eval()
        return all_va, f'all-VA variant: weights from {checkpoint}'
    source = backbone.state_dict()
    target = all_va.state_dict()
    copied = {k: v for k, v in source.items() if k in target and target[k].shape == v.shape}
    all_va.load_state_dict(copied, strict=False)
    kept = [k for k in target if k not in copied]
    dropped = [k for k in source if k not in copied]
    note = (f'all-VA variant: {len(copied)}/{len(target)} tensors copied from the analysed LaViT; '
            f'{len(kept)} keep their random init ({_summarise_keys(kept)}); {len(dropped)} LaViT tensors have no '
            f'place there ({_summarise_keys(dropped)})')
    all_va.eval()
    return all_va, note


def _summarise_keys(keys: Sequence[str]) -> str:
    tails = sorted({'.'.join(k.split('.')[-3:-1]) if k.split('.')[-1] in ('weight', 'bias', 'kernel_logits')
                    else k.split('.')[-1] for k in keys})
    return ', '.join(tails) if tails else 'none'


def analyse_lavit(backbone, inputs, cfg, scope: str, seed: int, all_va_checkpoint: Optional[str] = None,
                  unsafe_load: bool = False) -> Tuple[Meter, dict]:
    num_vanilla = list(backbone.arch['num_vanilla'])
    all_va, note = build_all_va(backbone, cfg, scope, seed, all_va_checkpoint, unsafe_load)
    meter = Meter()
    for i, image in enumerate(inputs):
        lavit_measure(meter, 'lavit', lavit_attention(backbone, image, verify=i == 0), num_vanilla)
        lavit_measure(meter, 'all-va', lavit_attention(all_va, image, verify=i == 0), num_vanilla)
    info = dict(num_vanilla=num_vanilla, depths=list(backbone.arch['depths']), all_va_note=note,
                key_grid=tuple(int(math.ceil(d / 32)) for d in inputs[0].shape[2:]))
    return meter, info


def cb_variant(backbone, on: bool) -> nn.Module:
    """A copy of the CB-ViT with context broadcasting on or off in every block (same weights otherwise)."""
    from vitattn_mm.models.layers.context_broadcast import ContextBroadcast
    model = copy.deepcopy(backbone)
    for block in model.blocks:
        has_cb = isinstance(block.cb, ContextBroadcast)
        if on and not has_cb:
            block.cb = ContextBroadcast()
        elif not on and has_cb:
            block.cb = nn.Identity()
    model.eval()
    return model


def analyse_cbvit(backbone, inputs) -> Tuple[Meter, dict]:
    from vitattn_mm.models.layers.context_broadcast import ContextBroadcast
    configured = [isinstance(b.cb, ContextBroadcast) for b in backbone.blocks]
    variants = OrderedDict([('cb-on', cb_variant(backbone, True)), ('cb-off', cb_variant(backbone, False))])
    meter = Meter()
    for i, image in enumerate(inputs):
        for name, model in variants.items():
            probs = vit_attention(model, image, verify=i == 0)
            for l, p in enumerate(probs):
                meter.add(name, 0, l, None, 'VA', density_stats(p))
                if l > 0:
                    meter.add(name, 0, l, l - 1, 'VA->VA', {
                        'cos_consecutive': row_cosine(probs[l - 1], p).mean().item(),
                        'ccos_consecutive': row_cosine(probs[l - 1], p, centre=True).mean().item(),
                    })
    if all(configured):
        cb_note = 'the configuration has CB on in every block; cb-off removes it from the same weights'
    elif not any(configured):
        cb_note = 'the configuration has CB off; cb-on adds parameter-free CB to the same weights'
    else:
        cb_note = f'the configuration has CB in blocks {[i for i, c in enumerate(configured) if c]}'
    h, w = inputs[0].shape[2:]
    tokens = 1 + math.ceil(h / backbone.patch_size) * math.ceil(w / backbone.patch_size)
    return meter, dict(cb_note=cb_note, tokens=tokens, depth=len(backbone.blocks))
