"""Convert a timm ``vit_*_patch16_224`` or DeiT checkpoint into a CB-ViT backbone checkpoint.

    python tools/model_converters/timm2cbvit.py SRC DST [--arch {deit-t,deit-s,deit-b}] [--img-size 224]
        [--verify | --no-verify] [--unsafe-load]

    # e.g. DeiT-S from https://dl.fbaipublicfiles.com/deit/deit_small_patch16_224-cd65a155.pth
    python tools/model_converters/timm2cbvit.py deit_small_patch16_224-cd65a155.pth pretrain/cbvit_deit-s.pth

SRC is a state dict, a dict with ``model`` or ``state_dict`` (DeiT, timm, mmengine), or a ``.safetensors`` file.
DST is ``{'state_dict': ..., 'meta': ...}`` with CBViT's key names (no prefix), for
``backbone=dict(type='CBViT', arch=..., init_cfg=dict(type='Pretrained', checkpoint=DST))``. The conversion is
CBViT's own ``convert_pretrained`` (drops the classifier, resizes the position embedding to ``--img-size``) and
``load_matching_state``; every ViT tensor of SRC must find its place in CBViT, only the feature pyramid
(``pyramid.*``, trained with the detector) is not in SRC. Distilled DeiT checkpoints (``dist_token``) are refused.

``--verify`` (default) loads SRC, unchanged, into timm's model of the same size (built for SRC's own grid, with
``dynamic_img_size=True``) and DST into ``CBViT(arch, context_broadcast=False)``, runs both on one random batch of
``--img-size`` x ``--img-size`` images and checks that CBViT's patch tokens (``forward_tokens``) equal timm's
``forward_features(x)[:, 1:]`` (atol 1e-5). At a size other than SRC's, timm resamples SRC's position embedding
itself (``resample_abs_pos_embed``) while CBViT uses the one this converter resized and stored in DST, so the
resize is checked against timm's own, not against itself.

SRC is read with ``torch.load(weights_only=True)``; ``--unsafe-load`` allows the full unpickler for a file you
trust that holds other Python objects. Exit status: 0 done, 2 user error (one ``error: ...`` line on stderr),
1 verification failed (DST is not written). Set VITATTN_TRACEBACK=1 for a traceback instead of the one line.
"""
import argparse
import math
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)  # run from a checkout

from vitattn_mm.utils.checkpoint_io import (UserError, add_unsafe_load_argument, load_checkpoint,  # noqa: E402
                                            one_line, require_file, run_cli, save_atomic)

# CBViT arch -> timm model with the same architecture (DeiT-T/S/B are these ViTs)
TIMM_MODELS = {
    'deit-t': 'vit_tiny_patch16_224',
    'deit-s': 'vit_small_patch16_224',
    'deit-b': 'vit_base_patch16_224',
}
ATOL = 1e-5
PATCH = 16


class VerificationError(Exception):
    """The converted backbone does not reproduce timm's features; exit status 1."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Convert a timm ViT / DeiT checkpoint into a CB-ViT backbone checkpoint (keys without prefix).')
    parser.add_argument('src', metavar='SRC', help='timm/DeiT checkpoint (.pth, .pt, .bin or .safetensors)')
    parser.add_argument('dst', metavar='DST', help='output CB-ViT backbone checkpoint')
    parser.add_argument('--arch', choices=sorted(TIMM_MODELS), default='deit-s',
                        help='CBViT arch; must match SRC (deit-t: ViT-Ti/16, deit-s: ViT-S/16, deit-b: ViT-B/16; '
                        'default: deit-s)')
    parser.add_argument('--img-size', type=int, default=224,
                        help='image size of the stored position embedding, a multiple of 16 (default: 224)')
    parser.add_argument('--verify', action=argparse.BooleanOptionalAction, default=True,
                        help="compare CBViT's patch tokens with timm's on a random batch (default: on)")
    add_unsafe_load_argument(
        parser, 'SRC', help='allow the full unpickler when SRC holds more than tensors (only for trusted files)')
    return parser.parse_args(argv)


def vit_state(checkpoint, path: str) -> dict:
    """The tensors of a timm/DeiT ViT checkpoint, after checking that it is one."""
    import torch

    from vitattn_mm.models.utils.checkpoint import extract_state_dict
    state = extract_state_dict(checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not state:
        raise UserError(f'{path} holds no state dict (a {type(checkpoint).__name__}); expected the weights or a '
                        "dict with 'model' or 'state_dict'")
    tensors = {k: v for k, v in state.items() if torch.is_tensor(v)}
    if not tensors:
        raise UserError(f"{path} holds no tensors; its top-level keys are {sorted(map(str, state))[:10]} "
                        "(expected the weights or a dict with 'model' or 'state_dict')")
    needed = ('patch_embed.proj.weight', 'pos_embed', 'cls_token')
    absent = [k for k in needed if k not in tensors]
    if absent:
        hint = ''
        nested = sorted(k for k in tensors if k.endswith('.' + absent[0]))
        if nested:
            hint = f' (found {nested[0]!r}: the keys carry a prefix; strip it first)'
        raise UserError(f'{path} is not a timm ViT/DeiT checkpoint: no {absent}{hint}; its first keys are '
                        f'{sorted(tensors)[:5]}')
    return tensors


def check_arch(state: dict, arch: str, path: str) -> None:
    """Refuses a SRC of another width or depth than ``arch`` before loading reports a wall of shape errors."""
    from vitattn_mm import CBViT
    width = state['patch_embed.proj.weight'].shape[0]
    depth = len({k.split('.')[1] for k in state if k.startswith('blocks.')})
    fits = [name for name, a in CBViT.arch_zoo.items() if (a['embed_dims'], a['depth']) == (width, depth)]
    want = CBViT.arch_zoo[arch]
    if (want['embed_dims'], want['depth']) != (width, depth):
        suggestion = f'; pass --arch {fits[0]}' if fits else ' (no CBViT arch has this size)'
        raise UserError(f'{path} is a ViT of width {width} with {depth} blocks, --arch {arch} has width '
                        f"{want['embed_dims']} and {want['depth']} blocks{suggestion}")


def source_grid(state: dict, path: str) -> int:
    patches = state['pos_embed'].shape[1] - 1
    grid = math.isqrt(patches)
    if grid * grid != patches:
        raise UserError(f'{path}: position embedding with {patches} patch tokens is not a square grid plus the '
                        'class token')
    return grid


def convert(state: dict, args):
    """CBViT's own conversion and loading; returns DST's state dict (the keys that came from SRC) and the keys of
    SRC that the conversion dropped (the classifier)."""
    from vitattn_mm import CBViT
    from vitattn_mm.models.utils import load_matching_state

    model = CBViT(arch=args.arch, img_size=args.img_size, context_broadcast=False, drop_path_rate=0.0)
    converted = model.convert_pretrained(dict(state))  # ValueError for distilled DeiT
    load_matching_state(model, converted, source=args.src)  # CheckpointMismatchError: no match, shapes differ
    own = model.state_dict()
    unexpected = sorted(set(converted) - set(own))
    missing = sorted(k for k in own if k not in converted and not k.startswith('pyramid.'))
    if unexpected or missing:
        hint = ''
        if 'fc_norm.weight' in state and 'norm.weight' in missing:
            hint = (' (SRC normalises the pooled features with fc_norm, as global-pool ViTs do, and has no token '
                    'norm, which CBViT needs)')
        raise UserError(f'{args.src} does not fully fit CBViT(arch={args.arch!r}): unexpected keys '
                        f'{short_list(unexpected)}, missing keys {short_list(missing)}{hint}')
    print('note: the pyramid.* keys listed as missing are the simple feature pyramid, which a ViT checkpoint does '
          'not have; it is trained with the detector/segmentor')
    dropped = sorted(set(state) - set(converted))
    return {k: v.detach().clone() for k, v in own.items() if k in converted}, dropped


def short_list(keys, limit: int = 8) -> str:
    if len(keys) <= limit:
        return str(keys)
    return f'{keys[:limit]} and {len(keys) - limit} more'


def verify(state: dict, dst_file: str, args) -> float:
    """Max |timm forward_features - CBViT forward_tokens| on a random batch; raises VerificationError.

    ``state``: SRC's tensors (timm's reference loads them unchanged); ``dst_file``: the converted checkpoint."""
    import timm
    import torch
    from mmengine.logging import MMLogger

    from vitattn_mm import CBViT

    size = args.img_size
    src_grid = source_grid(state, args.src)
    if src_grid != size // PATCH:
        print(f'note: verifying at {size}x{size} against timm resampling SRC\'s {src_grid}x{src_grid} position '
              'embedding itself (dynamic_img_size)')
    head = state['head.weight'].shape[0] if 'head.weight' in state else 0
    # the independent reference: timm's model at SRC's own grid, resizing SRC's position embedding on the fly
    ref = timm.create_model(TIMM_MODELS[args.arch], pretrained=False, num_classes=head, img_size=src_grid * PATCH,
                            dynamic_img_size=True).eval()
    try:
        missing, unexpected = ref.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise VerificationError(f'timm {TIMM_MODELS[args.arch]} cannot load {args.src}: {one_line(e)[:300]}') from e
    if missing:
        raise VerificationError(f'timm {TIMM_MODELS[args.arch]} has weights that {args.src} lacks: '
                                f'{short_list(missing)}')
    if unexpected:
        print(f'note: keys of {args.src} that timm {TIMM_MODELS[args.arch]} does not use (not verified): '
              f'{short_list(unexpected)}')

    ours = CBViT(arch=args.arch, img_size=size, context_broadcast=False, drop_path_rate=0.0,
                 init_cfg=dict(type='Pretrained', checkpoint=dst_file))
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel('ERROR')  # the conversion step has already reported what loading DST would repeat
    try:
        ours.init_weights()
    finally:
        logger.setLevel(level)
    ours.eval()

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, size, size, generator=generator)
    with torch.no_grad():
        expected = ref.forward_features(x)[:, ref.num_prefix_tokens:]
        tokens, _ = ours.forward_tokens(x)
    if tokens.shape != expected.shape:
        raise VerificationError(f'CBViT gives patch tokens of shape {tuple(tokens.shape)}, timm '
                                f'{tuple(expected.shape)}')
    diff = (tokens - expected).abs().max().item()
    if not diff <= ATOL:  # also catches NaN
        raise VerificationError(f'CBViT patch tokens differ from timm {TIMM_MODELS[args.arch]}: max |diff| = '
                                f'{diff:.3g} > {ATOL}')
    print(f'verified: max |CBViT forward_tokens - timm {TIMM_MODELS[args.arch]} forward_features| = {diff:.3g} '
          f'over {tokens.shape[0]}x{tokens.shape[1]} patch tokens (atol {ATOL})')
    return diff


def check_args(args) -> None:
    """The checks of the arguments alone, before any checkpoint is read."""
    require_file(args.src)
    if os.path.abspath(args.src) == os.path.abspath(args.dst):
        raise UserError('DST is SRC; write the converted checkpoint to another file')
    if args.img_size < 32 or args.img_size % PATCH:
        raise UserError(f'--img-size must be a multiple of {PATCH} and at least 32, got {args.img_size}')


def run(args) -> None:
    import vitattn_mm  # noqa: F401  (safe globals for numpy values in mmengine checkpoints)

    state = vit_state(load_checkpoint(args.src, args.unsafe_load, safetensors=True), args.src)
    check_arch(state, args.arch, args.src)
    dst_state, dropped = convert(state, args)
    grid = args.img_size // PATCH
    meta = dict(converter='tools/model_converters/timm2cbvit.py', source=os.path.basename(args.src),
                arch=args.arch, img_size=args.img_size, source_grid=source_grid(state, args.src), grid=grid,
                dropped_keys=dropped, vitattn_mm_version=vitattn_mm.__version__)

    check = (lambda tmp: verify(state, tmp, args)) if args.verify else None
    save_atomic({'state_dict': dst_state, 'meta': meta}, args.dst, check=check)
    print(f'wrote {len(dst_state)} tensors of CBViT(arch={args.arch!r}, img_size={args.img_size}) to {args.dst} '
          f'(dropped from SRC: {short_list(dropped)}); use it with '
          f"init_cfg=dict(type='Pretrained', checkpoint={args.dst!r})")


def main(argv=None) -> int:
    args = parse_args(argv)
    from vitattn_mm.models.utils.checkpoint import CheckpointMismatchError
    # ValueError: CBViT's own checks, e.g. distilled DeiT; a failed verification exits with 1
    return run_cli(lambda: (check_args(args), run(args)),
                   errors=(VerificationError, CheckpointMismatchError, ValueError), status={VerificationError: 1})


if __name__ == '__main__':
    sys.exit(main())
