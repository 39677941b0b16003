# The main job's shapes Mask R-CNN with LaViT-S without the residual attention downsampling between stages (each
# stage's first layer starts from its own attention only). For the accuracy-at-equal-cost comparison in
# docs/results.md.
_base_ = ['./maskrcnn_lavit_s_shapes.py']
model = dict(backbone=dict(attention_residual=False))
