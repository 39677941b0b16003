# Ablation: every layer computes vanilla attention (no less-attention layers, hence no DP loss).
_base_ = './upernet_lavit_s_ade20k.py'
model = dict(
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=[64, 128, 320, 512], depths=[3, 4, 6, 3], num_heads=[1, 2, 5, 8],
                  mlp_ratios=[8, 8, 4, 4], num_vanilla=[3, 4, 6, 3]),
        dp_loss=None))
