# What every vitattn_mm config adds to its toolbox's runtime:
# - import the package, so mmdet's/mmseg's own tools find our backbones, loss and hook;
# - AuxiliaryLossHook, which adds the backbone's diagonality-preserving loss to the model's losses as `loss_dp`
#   (it does nothing for backbones without auxiliary losses);
# - RandomStateHook, which stores the random generators in checkpoints so that --resume continues exactly.
custom_imports = dict(imports=['vitattn_mm'], allow_failed_imports=False)
custom_hooks = [dict(type='AuxiliaryLossHook'), dict(type='RandomStateHook')]
