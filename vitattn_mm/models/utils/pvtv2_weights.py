"""PVTv2 ImageNet weights for LaViT: the official, timm and mmdet layouts mapped onto LaViT's parameters.

LaViT-T/S/B use exactly PVTv2-b1/b2/b3's layout (embedding widths, depths, heads, MLP ratios, overlapping patch
embeddings, spatial-reduction attention with ratios 8/4/2/1, Mix-FFN), so PVTv2's public ImageNet-1k weights start
LaViT from ImageNet features. This module is the one place that knows the three layouts PVTv2 weights come in:

* the official release (``pvt_v2_b2.pth``): ``patch_embed{1..4}``, ``block{s}.{j}`` with ``attn.q``, ``attn.kv``,
  ``attn.sr``, ``attn.norm``, ``attn.proj``, ``mlp.dwconv.dwconv``; ``norm{1..4}``; ``head``;
* timm's ``pvt_v2_b*``: ``patch_embed``, ``stages.{i}.downsample`` (the patch embedding of stages 2-4),
  ``stages.{i}.blocks.{j}`` (``mlp.dwconv`` without the second ``dwconv``), ``stages.{i}.norm``; ``head``;
* mmdet's ``PyramidVisionTransformerV2`` (inside a detector checkpoint under ``backbone.``): ``layers.{i}.0``
  (``projection``, ``norm``), ``layers.{i}.1.{j}`` with ``attn.attn.in_proj_*`` = cat(q, k, v),
  ``attn.attn.out_proj``, ``ffn.layers.{0,1,4}`` (1x1, depthwise 3x3, 1x1 convolutions), ``layers.{i}.2``.

All three are first brought into one canonical form (timm's names, with the stage-1 patch embedding as
``stages.0.patch_embed`` and the others as ``stages.{i}.patch_embed``), then mapped onto LaViT:

* vanilla-attention (VA) layers take ``q``; ``k`` and ``v`` are the two halves of PVTv2's ``kv`` projection (rows
  ``[:C]`` and ``[C:]``, the order in which PVTv2 reshapes its output to ``(B, N, 2, heads, head_dim)``), the
  spatial reduction (``sr``, ``norm``) becomes :class:`KeyGridReduction` (``reduce.sr``, ``reduce.norm``), and
  ``proj``;
* less-attention (LA) layers compute no queries or keys: they take ``v`` (rows ``[C:]`` of ``kv``), the reduction
  and ``proj``; PVTv2's ``q`` and the key half of ``kv`` have no place in them and are reported as unused. The LA
  transforms (Theta, Psi) and the residual attention downsampling are LaViT's own and keep their initialisation;
* patch embeddings, block norms, Mix-FFNs and stage norms map one to one; the classifier ``head`` is dropped.

LaViT computes the reduced key grid with zero padding to a multiple of the ratio (PVTv2 floors); at input sizes
divisible by 32 the two are identical, so an all-VA LaViT without attention residual loaded from PVTv2 weights
reproduces PVTv2's stage outputs there (tested against timm).
"""
import re
from typing import Dict, List, Optional, Sequence, Tuple

import torch

StateDict = Dict[str, torch.Tensor]

# PVTv2 sizes: embed dims and depths (all use heads 1/2/5/8 and sr ratios 8/4/2/1)
PVTV2_ARCHS = {
    'b0': dict(embed_dims=[32, 64, 160, 256], depths=[2, 2, 2, 2], mlp_ratios=[8, 8, 4, 4]),
    'b1': dict(embed_dims=[64, 128, 320, 512], depths=[2, 2, 2, 2], mlp_ratios=[8, 8, 4, 4]),
    'b2': dict(embed_dims=[64, 128, 320, 512], depths=[3, 4, 6, 3], mlp_ratios=[8, 8, 4, 4]),
    'b3': dict(embed_dims=[64, 128, 320, 512], depths=[3, 4, 18, 3], mlp_ratios=[8, 8, 4, 4]),
    'b4': dict(embed_dims=[64, 128, 320, 512], depths=[3, 8, 27, 3], mlp_ratios=[8, 8, 4, 4]),
    'b5': dict(embed_dims=[64, 128, 320, 512], depths=[3, 6, 40, 3], mlp_ratios=[4, 4, 4, 4]),
}
# LaViT arch that has the layout of each PVTv2 size, and back
LAVIT_OF_PVTV2 = {'b1': 't', 'b2': 's', 'b3': 'b'}
PVTV2_OF_LAVIT = {v: k for k, v in LAVIT_OF_PVTV2.items()}
# the official release, as mmdet's PVTv2 configs load it
PVTV2_RELEASE_URL = 'https://github.com/whai362/PVT/releases/download/v2/pvt_v2_{}.pth'

LAYOUTS = ('official', 'timm', 'mmdet')


class PVTv2WeightsError(ValueError):
    """PVTv2 weights that cannot become LaViT weights (another size, the linear-SR variant, PVT v1, ...)."""


def pvtv2_layout(state: StateDict) -> Optional[str]:
    """``'official'``, ``'timm'`` or ``'mmdet'`` for PVTv2 weights (no prefix), ``None`` for anything else
    (LaViT's own weights included)."""
    keys = list(state)
    if any(k.startswith(('block1.', 'patch_embed1.')) for k in keys):
        return 'official'
    if any(re.match(r'stages\.\d+\.(downsample|blocks\.\d+\.attn\.kv)\.', k) for k in keys):
        return 'timm'
    if any(re.match(r'layers\.\d+\.0\.projection\.', k) for k in keys):
        return 'mmdet'
    return None


def _official_to_canonical(state: StateDict) -> StateDict:
    out = {}
    for k, v in state.items():
        k = re.sub(r'^patch_embed(\d)\.', lambda m: f'stages.{int(m.group(1)) - 1}.patch_embed.', k)
        k = re.sub(r'^block(\d)\.(\d+)\.', lambda m: f'stages.{int(m.group(1)) - 1}.blocks.{m.group(2)}.', k)
        k = re.sub(r'^norm(\d)\.', lambda m: f'stages.{int(m.group(1)) - 1}.norm.', k)
        out[k.replace('.mlp.dwconv.dwconv.', '.mlp.dwconv.')] = v
    return out


def _timm_to_canonical(state: StateDict) -> StateDict:
    out = {}
    for k, v in state.items():
        k = re.sub(r'^patch_embed\.', 'stages.0.patch_embed.', k)
        out[re.sub(r'^stages\.(\d+)\.downsample\.', r'stages.\1.patch_embed.', k)] = v
    return out


_MMDET_FFN = {'0': 'fc1', '1': 'dwconv', '4': 'fc2'}


def _mmdet_to_canonical(state: StateDict) -> StateDict:
    out = {}
    for k, v in state.items():
        m = re.match(r'layers\.(\d+)\.(\d)\.(.*)$', k)
        if m is None:
            out[k] = v
            continue
        stage, part, rest = m.groups()
        if part == '0':  # patch embedding
            out[f'stages.{stage}.patch_embed.' + rest.replace('projection.', 'proj.')] = v
        elif part == '2':  # stage norm
            out[f'stages.{stage}.norm.{rest}'] = v
        else:
            block, rest = rest.split('.', 1)
            prefix = f'stages.{stage}.blocks.{block}.'
            if rest.startswith('attn.attn.in_proj_'):  # cat(q, k, v) -> q, kv
                kind = rest[len('attn.attn.in_proj_'):]
                c = v.shape[0] // 3
                out[prefix + f'attn.q.{kind}'] = v[:c]
                out[prefix + f'attn.kv.{kind}'] = v[c:]
            elif rest.startswith('attn.attn.out_proj.'):
                out[prefix + 'attn.proj.' + rest.split('.')[-1]] = v
            elif rest.startswith('ffn.layers.'):
                index, kind = rest[len('ffn.layers.'):].split('.')
                if index not in _MMDET_FFN:
                    raise PVTv2WeightsError(f'mmdet PVT weights with an unknown FFN layer {k!r}: not PVTv2\'s '
                                            'Mix-FFN (use_conv_ffn=True)')
                name = _MMDET_FFN[index]
                if name != 'dwconv' and kind == 'weight':
                    v = v.flatten(1)  # 1x1 convolution -> linear
                out[prefix + f'mlp.{name}.{kind}'] = v
            else:
                out[prefix + rest] = v
    return out


_TO_CANONICAL = {'official': _official_to_canonical, 'timm': _timm_to_canonical, 'mmdet': _mmdet_to_canonical}


def canonical_pvtv2(state: StateDict, layout: str) -> StateDict:
    """PVTv2 weights of ``layout`` in canonical names (timm's, with ``stages.{i}.patch_embed`` for every stage)."""
    if any('pos_embed' in k for k in state):
        raise PVTv2WeightsError('these are PVT v1 weights (absolute position embeddings); LaViT has the layout of '
                                'PVTv2 (pvt_v2_b1/b2/b3)')
    return _TO_CANONICAL[layout](state)


def pvtv2_arch(canonical: StateDict) -> dict:
    """``embed_dims``, ``depths`` and ``mlp_ratios`` of canonical PVTv2 weights, and ``name`` (``'b2'``, or
    ``None`` for a size that is no PVTv2 release)."""
    dims, depths, ratios = [], [], []
    for i in range(4):
        key = f'stages.{i}.patch_embed.proj.weight'
        if key not in canonical:
            raise PVTv2WeightsError(f'PVTv2 weights without the patch embedding of stage {i + 1} ({key}); a '
                                    'PVTv2 backbone has four stages')
        dims.append(int(canonical[key].shape[0]))
        blocks = {int(m.group(1)) for k in canonical if (m := re.match(rf'stages\.{i}\.blocks\.(\d+)\.', k))}
        depths.append(len(blocks))
        fc1 = canonical.get(f'stages.{i}.blocks.0.mlp.fc1.weight')
        ratios.append(fc1.shape[0] // dims[-1] if fc1 is not None else None)
    name = next((n for n, a in PVTV2_ARCHS.items()
                 if (a['embed_dims'], a['depths'], a['mlp_ratios']) == (dims, depths, ratios)), None)
    return dict(name=name, embed_dims=dims, depths=depths, mlp_ratios=ratios)


def describe(arch: dict) -> str:
    """``PVTv2-b2 (embed_dims [..], depths [..])`` or the sizes alone for a size that is no release."""
    sizes = f"embed_dims {arch['embed_dims']}, depths {arch['depths']}, mlp_ratios {arch['mlp_ratios']}"
    return f"PVTv2-{arch['name']} ({sizes})" if arch.get('name') else f'a PVTv2-layout model ({sizes})'


def check_sizes(source: dict, target: dict, target_name: str) -> None:
    """Raises :class:`PVTv2WeightsError` naming both sizes unless the PVTv2 weights fit the LaViT arch."""
    keys = ('embed_dims', 'depths', 'mlp_ratios')
    if all(list(source[k]) == list(target[k]) for k in keys):
        return
    fitting = LAVIT_OF_PVTV2.get(source.get('name'))
    wanted = next((PVTV2_OF_LAVIT[a] for a, p in PVTV2_OF_LAVIT.items()
                   if all(list(PVTV2_ARCHS[p][k]) == list(target[k]) for k in keys)), None)
    hints = []
    if fitting:
        hints.append(f"these weights fit LaViT arch='{fitting}'")
    if wanted:
        hints.append(f'{target_name} takes PVTv2-{wanted} (pvt_v2_{wanted}.pth)')
    raise PVTv2WeightsError(
        f'the checkpoint is {describe(source)}, but {target_name} has embed_dims {list(target["embed_dims"])}, '
        f'depths {list(target["depths"])}, mlp_ratios {list(target["mlp_ratios"])}'
        + (f": {'; '.join(hints)}" if hints else ''))


def _check_spatial_reduction(canonical: StateDict, sr_ratios: Sequence[int]) -> None:
    for i, ratio in enumerate(sr_ratios):
        weight = canonical.get(f'stages.{i}.blocks.0.attn.sr.weight')
        if (weight is None) != (ratio == 1) or (weight is not None and weight.shape[-1] != ratio):
            found = 'none' if weight is None else f'a {weight.shape[-1]}x{weight.shape[-1]} convolution'
            raise PVTv2WeightsError(
                f'stage {i + 1} of the checkpoint has {found} as spatial reduction where LaViT has a {ratio}x{ratio} '
                'strided convolution' + ('' if ratio == 1 else ' (the linear-SR variants pvt_v2_*_li pool instead '
                                         'and do not fit)'))


def pvtv2_to_lavit(canonical: StateDict, less_attention: Sequence[Sequence[bool]],
                   sr_ratios: Sequence[int] = (8, 4, 2, 1)) -> Tuple[StateDict, List[str], List[str]]:
    """Maps canonical PVTv2 weights onto LaViT's parameter names.

    Args:
        canonical: weights from :func:`canonical_pvtv2`, of the same size as the LaViT (checked by the caller).
        less_attention: per stage, per block: whether LaViT's block is a less-attention layer.
        sr_ratios: LaViT's key grid reductions per stage.

    Returns:
        ``(state, unused, dropped)``: LaViT's state dict (``stages.*``), the PVTv2 tensors that LA layers do not
        use (their query projection and the key half of ``kv``), and the keys that have no place in a backbone
        (the classifier ``head``, and anything unknown).
    """
    _check_spatial_reduction(canonical, sr_ratios)
    out: StateDict = {}
    unused: List[str] = []
    used = set()
    for key, value in canonical.items():
        m = re.match(r'stages\.(\d+)\.blocks\.(\d+)\.attn\.(q|kv)\.(weight|bias)$', key)
        if m is None:
            continue
        stage, block, name, kind = int(m.group(1)), int(m.group(2)), m.group(3), m.group(4)
        prefix = f'stages.{stage}.blocks.{block}.attn.'
        is_la = less_attention[stage][block]
        used.add(key)
        if name == 'q':
            if is_la:
                unused.append(key)
            else:
                out[prefix + f'q.{kind}'] = value
        else:
            c = value.shape[0] // 2
            if is_la:
                unused.append(f'{key}[:{c}] (k)')
            else:
                out[prefix + f'k.{kind}'] = value[:c]
            out[prefix + f'v.{kind}'] = value[c:]
    dropped = []
    for key, value in canonical.items():
        if key in used:
            continue
        m = re.match(r'(stages\.\d+\.blocks\.\d+\.attn\.)(sr|norm)\.(.*)$', key)
        if m is not None:
            out[f'{m.group(1)}reduce.{m.group(2)}.{m.group(3)}'] = value
        elif re.match(r'stages\.\d+\.(patch_embed\.(proj|norm)|norm'
                      r'|blocks\.\d+\.(norm1|norm2|attn\.proj|mlp\.(fc1|dwconv|fc2)))\.(weight|bias)$', key):
            out[key] = value
        else:
            dropped.append(key)
    return out, unused, sorted(dropped)


def convert_pvtv2_for_lavit(state: StateDict, arch: dict, less_attention: Sequence[Sequence[bool]],
                            target_name: str = 'LaViT',
                            sr_ratios: Sequence[int] = (8, 4, 2, 1)) -> Optional[dict]:
    """PVTv2 weights of any layout -> LaViT weights; ``None`` when ``state`` is not PVTv2 weights.

    Returns a dict with ``state`` (LaViT's names), ``layout``, ``source`` (the detected size, see
    :func:`pvtv2_arch`), ``unused`` and ``dropped`` (see :func:`pvtv2_to_lavit`). Raises
    :class:`PVTv2WeightsError` for weights of another size than ``arch`` (naming both) or of a PVT variant that
    does not fit.
    """
    layout = pvtv2_layout(state)
    if layout is None:
        return None
    canonical = canonical_pvtv2(state, layout)
    source = pvtv2_arch(canonical)
    check_sizes(source, arch, target_name)
    converted, unused, dropped = pvtv2_to_lavit(canonical, less_attention, sr_ratios)
    return dict(state=converted, layout=layout, source=source, unused=unused, dropped=dropped)


def canonical_to_timm(canonical: StateDict) -> StateDict:
    """Canonical PVTv2 weights in timm's ``pvt_v2_b*`` names (to load them into timm's model, e.g. to verify)."""
    out = {}
    for k, v in canonical.items():
        k = re.sub(r'^stages\.0\.patch_embed\.', 'patch_embed.', k)
        out[re.sub(r'^stages\.(\d+)\.patch_embed\.', r'stages.\1.downsample.', k)] = v
    return out


def all_vanilla_arch(arch: dict, num_heads: Sequence[int] = (1, 2, 5, 8)) -> dict:
    """A LaViT arch dict of PVTv2's sizes in which every layer is a vanilla-attention layer: with
    ``attention_residual=False`` this LaViT computes exactly what PVTv2 computes (at sizes divisible by 32)."""
    return dict(embed_dims=list(arch['embed_dims']), depths=list(arch['depths']), num_heads=list(num_heads),
                mlp_ratios=list(arch['mlp_ratios']), num_vanilla=list(arch['depths']))


__all__ = ['PVTV2_ARCHS', 'LAVIT_OF_PVTV2', 'PVTV2_OF_LAVIT', 'PVTV2_RELEASE_URL', 'PVTv2WeightsError',
           'pvtv2_layout', 'canonical_pvtv2', 'pvtv2_arch', 'describe', 'check_sizes', 'pvtv2_to_lavit',
           'convert_pvtv2_for_lavit', 'canonical_to_timm', 'all_vanilla_arch']
