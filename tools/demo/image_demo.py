"""Run a trained detector or segmentor on an image or a folder and write the drawn results as PNG.

    python tools/demo/image_demo.py INPUT CONFIG CHECKPOINT [--out-dir DIR] [--grid FILE.png] [--limit N]
        [--score-thr 0.5] [--draw-size 480] [--device cpu]

INPUT is an image file or a folder of images. Uses mmdet's ``DetInferencer`` or mmseg's ``MMSegInferencer``
(whichever the config's ``default_scope`` names) and their visualizers; one PNG per image goes to ``--out-dir``,
and ``--grid`` additionally writes all of them side by side in one PNG. Images whose longer side is below
``--draw-size`` are upscaled before inference (the model's own test pipeline resizes them back), so that boxes,
masks and their labels are drawn legibly on small images such as the 160x160 shapes set.
"""
import argparse
import math
import os
import os.path as osp
import sys
import tempfile

import numpy as np

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))  # run from a checkout

from vitattn_mm.utils.images import list_images  # noqa: E402

def build_inferencer(config: str, checkpoint: str, device: str):
    from mmengine.config import Config
    scope = Config.fromfile(config).get('default_scope')
    if scope == 'mmdet':
        from mmdet.apis import DetInferencer
        return DetInferencer(model=config, weights=checkpoint, device=device, show_progress=False), scope
    if scope == 'mmseg':
        from mmseg.apis import MMSegInferencer
        return MMSegInferencer(model=config, weights=checkpoint, device=device), scope
    raise ValueError(f'{config}: default_scope must be mmdet or mmseg, got {scope!r}')


def tile(images, columns: int = 4, gap: int = 4) -> np.ndarray:
    """Images (HxWx3, any sizes) side by side on a white canvas, ``columns`` per row."""
    columns = min(columns, len(images))
    rows = math.ceil(len(images) / columns)
    cell_h = max(i.shape[0] for i in images)
    cell_w = max(i.shape[1] for i in images)
    canvas = np.full((rows * (cell_h + gap) - gap, columns * (cell_w + gap) - gap, 3), 255, np.uint8)
    for n, img in enumerate(images):
        r, c = divmod(n, columns)
        y, x = r * (cell_h + gap), c * (cell_w + gap)
        canvas[y:y + img.shape[0], x:x + img.shape[1]] = img
    return canvas


def upscaled_for_drawing(path: str, draw_size: int, tmp_dir: str) -> str:
    """``path``, or a lossless upscaled copy in ``tmp_dir`` whose longer side is ``draw_size`` pixels.

    The inferencers draw on the image they are given; handing them a file (not an array) keeps their own
    BGR/RGB handling.
    """
    import mmcv
    img = mmcv.imread(path)
    if img is None:
        raise FileNotFoundError(f'cannot read image {path}')
    longer = max(img.shape[:2])
    if not draw_size or longer >= draw_size:
        return path
    out = osp.join(tmp_dir, osp.splitext(osp.basename(path))[0] + '.png')
    mmcv.imwrite(mmcv.imrescale(img, draw_size / longer, interpolation='bilinear'), out)
    return out


def run(inputs, config, checkpoint, out_dir=None, grid=None, score_thr=0.5, device='cpu', draw_size=480):
    """Draws predictions for ``inputs`` (image paths); returns the list of PNG files written."""
    import mmcv
    inferencer, scope = build_inferencer(config, checkpoint, device)
    kwargs = dict(pred_score_thr=score_thr) if scope == 'mmdet' else dict(opacity=0.6)
    drawn = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        for path in inputs:
            image = upscaled_for_drawing(path, draw_size, tmp_dir)
            drawn.append(inferencer(image, return_vis=True, **kwargs)['visualization'][0])  # RGB
    written = []
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        for path, vis in zip(inputs, drawn):
            out = osp.join(out_dir, osp.splitext(osp.basename(path))[0] + '.png')
            mmcv.imwrite(mmcv.rgb2bgr(vis), out)
            written.append(out)
    if grid:
        mmcv.imwrite(mmcv.rgb2bgr(tile(drawn)), grid)
        written.append(grid)
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('input', help='image file or folder')
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--out-dir', default='outputs/demo', help='one PNG per image goes here')
    parser.add_argument('--grid', help='also write all drawn images side by side into this PNG')
    parser.add_argument('--limit', type=int, default=0, help='use at most N images of a folder')
    parser.add_argument('--score-thr', type=float, default=0.5, help='detections below this score are not drawn')
    parser.add_argument('--draw-size', type=int, default=480,
                        help='upscale images whose longer side is smaller than this before drawing (0: never)')
    parser.add_argument('--device', default='cpu')
    args = parser.parse_args(argv)
    from vitattn_mm.utils.run import report_and_exit
    with report_and_exit():
        written = run(list_images(args.input, args.limit), args.config, args.checkpoint, args.out_dir, args.grid,
                      args.score_thr, args.device, args.draw_size)
    print('\n'.join(['wrote:'] + written))


if __name__ == '__main__':
    main()
