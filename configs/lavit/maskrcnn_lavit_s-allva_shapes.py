# The main job's shapes Mask R-CNN with all-VA LaViT-S: every layer computes its own attention (architecturally
# PVTv2-b2 with our attention code), no DP loss. For the accuracy-at-equal-cost comparison in docs/results.md.
_base_ = ['./maskrcnn_lavit_s_shapes.py']
model = dict(backbone=dict(arch=dict(_delete_=True, **_base_.lavit_s_allva_arch), dp_loss=None))
