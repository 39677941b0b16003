"""Convert PVTv2 ImageNet weights (official release, timm or mmdet layout) into a LaViT backbone checkpoint.

    python tools/model_converters/pvtv2_to_lavit.py SRC DST [--arch {t,s,b}] [--prefix backbone.]
        [--verify | --no-verify] [--verify-size 128] [--unsafe-load]

    # e.g. LaViT-S from PVTv2-b2 (https://github.com/whai362/PVT/releases/download/v2/pvt_v2_b2.pth)
    python tools/model_converters/pvtv2_to_lavit.py pvt_v2_b2.pth pretrain/lavit_s_pvtv2-b2.pth

You do not need this tool to train: ``LaViT(init_cfg=dict(type='Pretrained', checkpoint='pvt_v2_b2.pth'))`` and the
headline configs load PVTv2 weights as they are. It writes the file for those who want one (to publish, to inspect,
or to skip the conversion at every start).

SRC is the official release (``patch_embed1``, ``block1.0.attn.kv``, ...), timm's ``pvt_v2_b*`` (``stages.0.blocks``,
``stages.1.downsample``), or an mmdet PVTv2 detector checkpoint (pass ``--prefix backbone.``); a state dict or a dict
with ``model`` / ``state_dict``, or ``.safetensors``. ``--arch`` defaults to the LaViT that has SRC's layout
(PVTv2-b1 -> t, b2 -> s, b3 -> b); a SRC of another size than ``--arch`` is refused, naming both. DST is
``{'state_dict': ..., 'meta': ...}`` with LaViT's key names (no prefix), for
``backbone=dict(type='LaViT', arch=..., init_cfg=dict(type='Pretrained', checkpoint=DST))``. The conversion is
LaViT's own ``convert_pretrained`` (see ``vitattn_mm/models/utils/pvtv2_weights.py``); DST holds the tensors that
came from SRC. LaViT's own parts (the less-attention transforms and the residual attention downsampling) are not in
SRC and keep their initialisation when DST is loaded; the query/key projections of PVTv2 that less-attention layers
do not use are listed.

``--verify`` (default) checks the mapping itself: an all-vanilla-attention LaViT of SRC's size without attention
residual, loaded from SRC, must reproduce timm's ``pvt_v2_b*`` loaded from SRC, stage by stage, on a random batch at
``--verify-size`` (a multiple of 32), to a relative error below 1e-4; and DST must load into ``LaViT(arch)`` with
every tensor placed.

Exit status: 0 done, 2 user error (one ``error: ...`` line on stderr), 1 verification failed (DST is not written).
Set VITATTN_TRACEBACK=1 for a traceback instead of the one line.
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)  # run from a checkout

from vitattn_mm.utils.checkpoint_io import (UserError, add_unsafe_load_argument, load_checkpoint,  # noqa: E402
                                            run_cli, save_atomic)

RTOL = 1e-4


class VerificationError(Exception):
    """The converted LaViT does not reproduce PVTv2's features; exit status 1."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Convert PVTv2 weights (official, timm or mmdet layout) into a LaViT backbone checkpoint.')
    parser.add_argument('src', metavar='SRC', help='PVTv2 checkpoint (.pth, .pt, .bin or .safetensors)')
    parser.add_argument('dst', metavar='DST', help='output LaViT backbone checkpoint')
    parser.add_argument('--arch', choices=('t', 's', 'b'), default=None,
                        help="LaViT arch; default: the one with SRC's layout (PVTv2-b1: t, b2: s, b3: b)")
    parser.add_argument('--prefix', default='',
                        help='take the keys under this prefix, e.g. backbone. for an mmdet detector checkpoint')
    parser.add_argument('--verify', action=argparse.BooleanOptionalAction, default=True,
                        help="compare an all-VA LaViT loaded from SRC with timm's PVTv2 (default: on)")
    parser.add_argument('--verify-size', type=int, default=128,
                        help='image size of the verification batch, a multiple of 32 (default: 128)')
    add_unsafe_load_argument(
        parser, 'SRC', help='allow the full unpickler when SRC holds more than tensors (only for trusted files)')
    return parser.parse_args(argv)


def check_args(args) -> None:
    from vitattn_mm.utils.checkpoint_io import require_file
    require_file(args.src)
    if os.path.abspath(args.src) == os.path.abspath(args.dst):
        raise UserError('DST is SRC; write the converted checkpoint to another file')
    if args.verify_size < 32 or args.verify_size % 32:
        raise UserError(f'--verify-size must be a multiple of 32, got {args.verify_size}')


def source_state(checkpoint, args) -> dict:
    """The tensors of SRC under ``--prefix``, after checking that they are PVTv2 weights."""
    import torch

    from vitattn_mm.models.utils.checkpoint import extract_state_dict, strip_prefix
    from vitattn_mm.models.utils.pvtv2_weights import pvtv2_layout
    state = extract_state_dict(checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise UserError(f'{args.src} holds no state dict (a {type(checkpoint).__name__})')
    tensors = {k: v for k, v in state.items() if isinstance(k, str) and torch.is_tensor(v)}
    if args.prefix:
        tensors = strip_prefix(tensors, args.prefix)
        if not tensors:
            raise UserError(f'no tensor of {args.src} starts with {args.prefix!r}')
    if pvtv2_layout(tensors) is None:
        hint = ''
        if any(k.startswith('backbone.') for k in tensors):
            hint = ' (its keys start with backbone.: pass --prefix backbone.)'
        raise UserError(f'{args.src} holds no PVTv2 weights in the official, timm or mmdet layout{hint}; its first '
                        f'keys are {sorted(tensors)[:5]}')
    return tensors


def convert(state: dict, args):
    """LaViT's own conversion; returns (arch, DST's state dict, the conversion's report)."""
    from vitattn_mm import LaViT
    from vitattn_mm.models.utils import load_matching_state
    from vitattn_mm.models.utils.pvtv2_weights import (LAVIT_OF_PVTV2, PVTv2WeightsError, canonical_pvtv2,
                                                       check_sizes, describe, pvtv2_arch, pvtv2_layout)
    source = pvtv2_arch(canonical_pvtv2(state, pvtv2_layout(state)))
    arch = args.arch or LAVIT_OF_PVTV2.get(source['name'])
    if arch is None:
        raise PVTv2WeightsError(f'{args.src} is {describe(source)}; LaViT-T/S/B take PVTv2-b1/b2/b3')
    check_sizes(source, LaViT.arch_zoo[arch], f"LaViT arch='{arch}'")  # before building a model of the wrong size
    model = LaViT(arch=arch, drop_path_rate=0.0)
    converted = model.convert_pretrained(dict(state))  # PVTv2WeightsError: another size, linear SR, PVT v1
    report = load_matching_state(model, converted, source=args.src)
    own = model.state_dict()
    unexpected = sorted(set(converted) - set(own))
    if unexpected:
        raise UserError(f'{args.src}: converted keys that LaViT(arch={arch!r}) lacks: {unexpected[:8]}')
    return arch, source, {k: v.detach().clone() for k, v in own.items() if k in converted}, report


def timm_stage_outputs(model, x):
    """The four stage outputs (B, C, H, W) of timm's PyramidVisionTransformerV2."""
    outs = []
    x = model.patch_embed(x)  # timm 1.0: (B, H, W, C); each stage takes and gives a map
    for stage in model.stages:
        x = stage(x)
        outs.append(x)
    return outs


def verify(state: dict, source: dict, arch: str, dst_state: dict, dst_file: str, args) -> float:
    """Largest relative error of the all-VA LaViT's stage outputs against timm's; raises VerificationError."""
    import timm
    import torch
    from mmengine.logging import MMLogger

    from vitattn_mm import LaViT
    from vitattn_mm.models.utils import load_pretrained
    from vitattn_mm.models.utils.pvtv2_weights import (all_vanilla_arch, canonical_pvtv2, canonical_to_timm,
                                                       pvtv2_layout)

    timm_name = f"pvt_v2_{source['name']}"
    ref = timm.create_model(timm_name, pretrained=False, num_classes=0).eval()
    ref_state = {k: v for k, v in canonical_to_timm(canonical_pvtv2(state, pvtv2_layout(state))).items()
                 if not k.startswith('head.')}
    missing, unexpected = ref.load_state_dict(ref_state, strict=False)
    if missing or unexpected:
        raise VerificationError(f'timm {timm_name} does not take {args.src}: missing {missing[:5]}, unexpected '
                                f'{unexpected[:5]}')
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel('ERROR')  # the conversion step has already reported what loading repeats
    try:
        allva = LaViT(arch=all_vanilla_arch(source), attention_residual=False, drop_path_rate=0.0)
        allva.load_state_dict(allva.convert_pretrained(dict(state)))  # strict: every tensor of an all-VA LaViT
        ours = LaViT(arch=arch, drop_path_rate=0.0)
        # what init_cfg=dict(type='Pretrained', checkpoint=DST) loads after the random initialisation
        load_pretrained(ours, dst_file, convert=ours.convert_pretrained)
    finally:
        logger.setLevel(level)
    placed = {k: v for k, v in ours.state_dict().items() if k in dst_state}
    if len(placed) != len(dst_state) or any(not torch.equal(placed[k], dst_state[k]) for k in dst_state):
        raise VerificationError(f'{dst_file} does not load into LaViT(arch={arch!r}) unchanged')
    allva.eval()
    size = args.verify_size
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = timm_stage_outputs(ref, x)
        got = allva(x)
    worst = 0.0
    for i, (a, b) in enumerate(zip(got, expected)):
        if a.shape != b.shape:
            raise VerificationError(f'stage {i + 1}: LaViT gives {tuple(a.shape)}, timm {tuple(b.shape)}')
        rel = ((a - b).norm() / b.norm()).item()
        if not rel < RTOL:  # also catches NaN
            raise VerificationError(f'stage {i + 1} of the all-VA LaViT differs from timm {timm_name}: relative '
                                    f'error {rel:.3g} >= {RTOL}')
        worst = max(worst, rel)
    print(f'verified: the all-VA LaViT loaded from {args.src} reproduces timm {timm_name} at {size}x{size}, largest '
          f'relative error over the 4 stages {worst:.3g} (< {RTOL}); {os.path.basename(args.dst)} loads into '
          f'LaViT(arch={arch!r}) with all {len(dst_state)} tensors placed')
    return worst


def run(args) -> None:
    import vitattn_mm

    state = source_state(load_checkpoint(args.src, args.unsafe_load, safetensors=True), args)
    arch, source, dst_state, report = convert(state, args)
    meta = dict(converter='tools/model_converters/pvtv2_to_lavit.py', source=os.path.basename(args.src),
                source_arch=f"pvt_v2_{source['name']}", arch=arch, vitattn_mm_version=vitattn_mm.__version__)
    check = (lambda tmp: verify(state, source, arch, dst_state, tmp, args)) if args.verify else None
    save_atomic({'state_dict': dst_state, 'meta': meta}, args.dst, check=check)
    print(f"wrote {len(dst_state)} tensors of LaViT(arch={arch!r}) from pvt_v2_{source['name']} to {args.dst}: "
          f'{report.params / 1e6:.2f}M of its {report.total_params / 1e6:.2f}M parameters '
          f'({100 * report.param_fraction:.1f}%); use it with '
          f"init_cfg=dict(type='Pretrained', checkpoint={args.dst!r})")


def main(argv=None) -> int:
    args = parse_args(argv)
    from vitattn_mm.models.utils.checkpoint import CheckpointMismatchError
    # ValueError: PVTv2WeightsError (another size, linear SR, PVT v1); a failed verification exits with 1
    return run_cli(lambda: (check_args(args), run(args)),
                   errors=(VerificationError, CheckpointMismatchError, ValueError), status={VerificationError: 1})


if __name__ == '__main__':
    sys.exit(main())
