"""The diagonality-preserving loss trains what it is meant to train, on its own: backpropagating ``loss_dp`` alone
(not summed with the main loss, which would hide a detached DP loss) reaches the LA transforms Theta/Psi and the
attention carry, in the backbone and inside an mmdet detector through AuxiliaryLossHook."""
import torch
from conftest import TINY_LAVIT
from mmengine.config import Config

from vitattn_mm import LaViT
from vitattn_mm.engine import AuxiliaryLossHook

DP_LOSS = dict(type='DiagonalityPreservingLoss', loss_weight=1.0)
SHAPES_CONFIG = 'configs/lavit/maskrcnn_lavit_s_shapes.py'


def carried_parameter_names(model, prefix=''):
    """Names of the parameters the DP loss must train: the LA kernels of every less-attention layer and the
    gates and head mixing of every attention downsampling."""
    names = []
    for i, stage in enumerate(model.stages):
        for j, block in enumerate(stage.blocks):
            if block.less_attention:
                names += [f'{prefix}stages.{i}.blocks.{j}.attn.{t}.kernel_logits' for t in ('theta', 'psi')]
    for i, down in enumerate(model.attention_downsamples):
        names.append(f'{prefix}attention_downsamples.{i}.gate_logits')
        if down.head_mix_logits is not None:
            names.append(f'{prefix}attention_downsamples.{i}.head_mix_logits')
    return names


def assert_dp_gradients(model, names):
    params = dict(model.named_parameters())
    without = [n for n in names if params[n].grad is None or not params[n].grad.abs().sum() > 0]
    assert without == [], f'loss_dp alone gives no gradient to {without}'


def test_dp_loss_alone_trains_la_kernels_and_carry_gates():
    model = LaViT(arch=TINY_LAVIT, dp_loss=DP_LOSS, drop_path_rate=0.0)
    model.init_weights()
    model.train()
    model(torch.randn(2, 3, 96, 64))
    loss_dp = model.pop_auxiliary_losses()['loss_dp']
    assert loss_dp.requires_grad and loss_dp.item() > 0
    loss_dp.backward()  # alone: the features are not part of this loss
    names = carried_parameter_names(model)
    assert len([n for n in names if 'kernel_logits' in n]) == 2 * 5  # TINY_LAVIT has 5 LA layers
    assert len([n for n in names if 'gate_logits' in n]) == 3
    assert_dp_gradients(model, names)


def shapes_batch(h=96, w=128):
    """Two images with one square and one circle each, as mmdet's PackDetInputs hands them to the model."""
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    inputs, samples = [], []
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing='ij')
    for shift in (0, 16):
        image = torch.full((3, h, w), 40, dtype=torch.uint8)
        square = (yy >= 10 + shift) & (yy < 50 + shift) & (xx >= 12) & (xx < 52)
        circle = (yy - 60) ** 2 + (xx - 90 + shift) ** 2 < 20 ** 2
        image[:, square] = 200
        image[0, circle] = 230
        masks = torch.stack([square, circle]).numpy().astype('uint8')
        boxes = [[12, 10 + shift, 52, 50 + shift], [70 - shift, 40, 110 - shift, 80]]
        sample = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), scale_factor=(1.0, 1.0),
                                             pad_shape=(h, w), batch_input_shape=(h, w)))
        sample.gt_instances = InstanceData(bboxes=torch.tensor(boxes, dtype=torch.float32),
                                           labels=torch.tensor([1, 0]), masks=BitmapMasks(masks, h, w))
        inputs.append(image)
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def test_dp_loss_alone_trains_la_kernels_and_gates_inside_mask_rcnn(tmp_path):
    """A real mmengine Runner builds Mask R-CNN from the shapes config (tiny LaViT) with the config's
    AuxiliaryLossHook; the hook merges ``loss_dp`` into the detector's loss dict, mmengine's ``parse_losses`` sums
    it into the total, and ``loss_dp`` alone backpropagates into the backbone's LA kernels and gates."""
    from mmengine.registry import DefaultScope
    from mmengine.runner import Runner
    cfg = Config.fromfile(SHAPES_CONFIG)
    cfg.model.backbone.update(arch=TINY_LAVIT, init_cfg=None, drop_path_rate=0.0)
    cfg.model.neck.in_channels = TINY_LAVIT['embed_dims']
    # the runner makes its default scope the current one; leave the one we found for the tests that follow (by name:
    # overwrite_default_scope restores deep copies of the scope objects)
    def current_scope():
        scope = DefaultScope.get_current_instance()
        return scope and scope.scope_name

    scope_before = current_scope()
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        runner = Runner(model=cfg.model, work_dir=str(tmp_path), default_scope=cfg.default_scope,
                        custom_hooks=cfg.custom_hooks)
        hooks = [h for h in runner.hooks if isinstance(h, AuxiliaryLossHook)]
        assert len(hooks) == 1
        hooks[0].before_run(runner)  # registers the merge on the model, as at the start of runner.train()
        model = runner.model.train()
        data = model.data_preprocessor(shapes_batch(), True)
        losses = model(**data, mode='loss')
        assert 'loss_dp' in losses and losses['loss_dp'].requires_grad
        total, log_vars = model.parse_losses(losses)
        assert 'loss_dp' in log_vars and 'loss_rpn_cls' in log_vars
        others = sum(v.item() if torch.is_tensor(v) else sum(x.item() for x in v)
                     for k, v in losses.items() if 'loss' in k and k != 'loss_dp')
        assert abs(total.item() - others - losses['loss_dp'].item()) < 1e-4  # loss_dp is in the total

        losses['loss_dp'].backward()  # alone
        assert_dp_gradients(model, carried_parameter_names(model.backbone, prefix='backbone.'))
        assert all(p.grad is None for p in model.neck.parameters())  # nothing but loss_dp was backpropagated
        hooks[0].after_run(runner)
        model(**data, mode='loss')
        assert 'loss_dp' in model.backbone.pop_auxiliary_losses()  # after the run the hook no longer collects it
    assert current_scope() == scope_before


def test_detection_losses_alone_train_every_backbone_parameter():
    """The detector's own losses (loss_dp left out) reach every parameter of the LaViT backbone inside Mask R-CNN:
    a backbone whose features were detached, or a stage that did not reach the neck, would fail here. (The
    detection learning test cannot show this: at its CPU budget a backbone frozen at random init scores as high as
    a trained one; see tests/test_detection.py.)"""
    from mmdet.registry import MODELS
    from mmengine.registry import DefaultScope
    cfg = Config.fromfile(SHAPES_CONFIG)
    cfg.model.backbone.update(arch=TINY_LAVIT, init_cfg=None, drop_path_rate=0.0)
    cfg.model.neck.in_channels = TINY_LAVIT['embed_dims']
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(cfg.model)
        model.init_weights()
        model.train()
        data = model.data_preprocessor(shapes_batch(), True)
        losses = model(**data, mode='loss')
        model.backbone.pop_auxiliary_losses()  # loss_dp is not part of this backward
        total, _ = model.parse_losses(losses)
        total.backward()
    without = [n for n, p in model.backbone.named_parameters()
               if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert without == [], f'the detection losses give no gradient to {without}'
