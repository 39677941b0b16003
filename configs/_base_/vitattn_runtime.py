# What every vitattn_mm config adds to its toolbox's runtime:
# - import the package, so mmdet's/mmseg's own tools find our backbones, loss and hook;
# - AuxiliaryLossHook, which adds the backbone's diagonality-preserving loss to the model's losses as `loss_dp`
#   (it does nothing for backbones without auxiliary losses);
# - ResumableCheckpointHook: checkpoints store the random generators (--resume continues exactly) and load
#   with torch's safe loader (weights_only=True).
custom_imports = dict(imports=['vitattn_mm'], allow_failed_imports=False)
custom_hooks = [dict(type='AuxiliaryLossHook'), dict(type='ResumableCheckpointHook')]
