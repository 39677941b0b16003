"""One "shapes" scene: the classes, their outlines and colours, the background, occlusion and rendering.

Later shapes occlude earlier ones; each ``ShapeInstance`` keeps the visible part of its shape.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw

SHAPE_CLASSES = ('circle', 'square', 'triangle', 'star')
SHAPE_PALETTE = ((220, 20, 60), (0, 130, 200), (60, 180, 75), (255, 190, 0))
SHAPES_METAINFO = dict(classes=SHAPE_CLASSES, palette=list(SHAPE_PALETTE))

DEFAULT_IMAGE_SIZE = (160, 160)

# Circumscribed-circle diameter of each class, as a fraction of min(h, w).
# The lower bounds keep every unoccluded shape above ~1.5% of the image.
_DIAMETER_RANGE = ((0.13, 0.45), (0.17, 0.55), (0.21, 0.55), (0.21, 0.55))
_STAR_INNER_RATIO = 0.45
_CIRCLE_VERTICES = 32
_MIN_VISIBLE_FRACTION = 0.5  # of an occluded shape's own area
_MIN_AREA_FRACTION = 0.01  # of the image area
_BG_COLOR_DIST = 120.0
_FG_COLOR_DIST = 70.0
# hue (degrees) of each class's colour family: circle red, square blue, triangle green, star yellow
_CLASS_HUES = (0.0, 220.0, 130.0, 55.0)


@dataclass(eq=False)
class ShapeInstance:
    """One shape of a scene.

    ``label`` indexes ``SHAPE_CLASSES``; ``polygon`` is the drawn outline
    (implicitly closed, >= 3 points); ``mask`` is the visible region
    (bool, HxW); ``color`` is the RGB fill before shading.
    """

    label: int
    polygon: list[tuple[float, float]]
    mask: np.ndarray
    color: tuple[int, int, int]

    @property
    def area(self) -> int:
        """Visible area in pixels."""
        return int(self.mask.sum())


def _as_size(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        h, w = (int(v) for v in size)
    if h < 32 or w < 32 or max(h, w) > 2 * min(h, w):
        raise ValueError('image size must be at least 32x32 with an aspect '
                         f'ratio of at most 2, got {h}x{w}')
    return h, w


def _shape_polygon(label: int, cx: float, cy: float, radius: float,
                   theta: float) -> list[tuple[float, float]]:
    if label == 0:
        k = np.arange(_CIRCLE_VERTICES)
        angles = theta + 2 * np.pi * k / _CIRCLE_VERTICES
        radii = np.full(_CIRCLE_VERTICES, radius)
    elif label == 1:
        angles = theta + np.pi / 4 + np.pi / 2 * np.arange(4)
        radii = np.full(4, radius)
    elif label == 2:
        angles = theta - np.pi / 2 + 2 * np.pi / 3 * np.arange(3)
        radii = np.full(3, radius)
    elif label == 3:
        angles = theta - np.pi / 2 + np.pi / 5 * np.arange(10)
        radii = np.where(np.arange(10) % 2 == 0, radius,
                         radius * _STAR_INNER_RATIO)
    else:
        raise ValueError(f'unknown shape label {label}')
    xs = cx + radii * np.cos(angles)
    ys = cy + radii * np.sin(angles)
    return [(round(float(x), 3), round(float(y), 3)) for x, y in zip(xs, ys)]


def _rasterize(polygon: Sequence[tuple[float, float]], h: int,
               w: int) -> np.ndarray:
    canvas = Image.new('L', (w, h), 0)
    ImageDraw.Draw(canvas).polygon(list(polygon), fill=1)
    return np.asarray(canvas, dtype=bool)


def _smooth_noise(rng: np.random.Generator, h: int, w: int,
                  cells: int) -> np.ndarray:
    """Bilinearly upsampled Gaussian noise, shape (h, w), unit scale."""
    grid = rng.normal(0.0, 1.0, (cells + 1, cells + 1))
    ys = np.linspace(0.0, cells, h)
    xs = np.linspace(0.0, cells, w)
    y0 = np.minimum(ys.astype(int), cells - 1)
    x0 = np.minimum(xs.astype(int), cells - 1)
    fy = (ys - y0)[:, None]
    fx = (xs - x0)[None, :]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _background(rng: np.random.Generator, h: int,
                w: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Return a float HxWx3 background and its reference colors."""
    kind = int(rng.integers(4))  # plain, gradient, noise, stripes
    base = rng.uniform(15.0, 240.0, 3)
    img = np.broadcast_to(base, (h, w, 3)).astype(np.float64)
    refs = [base]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    if kind == 1:
        other = np.clip(base + rng.uniform(-60.0, 60.0, 3), 0.0, 255.0)
        phi = rng.uniform(0.0, 2 * np.pi)
        t = xx * np.cos(phi) + yy * np.sin(phi)
        t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
        img = base * (1 - t[..., None]) + other * t[..., None]
        refs.append(other)
    elif kind == 2:
        amp = rng.uniform(8.0, 18.0)
        field = _smooth_noise(rng, h, w, int(rng.integers(3, 9))) * amp
        field += rng.normal(0.0, 3.0, (h, w))
        img = img + field[..., None]
    elif kind == 3:
        amp = rng.uniform(8.0, 16.0)
        period = rng.uniform(6.0, 24.0)
        phi = rng.uniform(0.0, np.pi)
        t = (xx * np.cos(phi) + yy * np.sin(phi)) / period
        stripes = np.where((t % 1.0) < 0.5, amp, -amp)
        img = img + stripes[..., None]
    return img, refs


def _pick_color(rng: np.random.Generator, label: int, bg_refs: list[np.ndarray],
                fg_colors: list[np.ndarray], class_colours: bool = True) -> np.ndarray:
    """Draw a color of the class's hue family, far from the background and from other shapes.

    Each class has its own hue range (``_CLASS_HUES``, +-20 degrees), with random saturation and brightness, as
    object classes in real images come with typical colours; the class is thus told by colour *and* shape, which
    makes the set learnable by a transformer trained from scratch in a few hundred CPU iterations. With
    ``class_colours=False`` the hue is uniform over the circle, so only the shape tells the class.
    """
    best, best_score = None, -1.0
    for _ in range(64):
        if class_colours:
            hue = (_CLASS_HUES[label] + rng.uniform(-20.0, 20.0)) % 360.0 / 360.0
        else:
            hue = rng.uniform(0.0, 1.0)
        rgb = colorsys.hsv_to_rgb(hue, rng.uniform(0.55, 1.0), rng.uniform(0.5, 1.0))
        color = np.rint(np.array(rgb) * 255.0)
        d_bg = min(float(np.linalg.norm(color - ref)) for ref in bg_refs)
        d_fg = min((float(np.linalg.norm(color - c)) for c in fg_colors),
                   default=np.inf)
        score = min(d_bg / _BG_COLOR_DIST, d_fg / _FG_COLOR_DIST)
        if score >= 1.0:
            return color
        if score > best_score:
            best, best_score = color, score
    return best


def render_scene(
    rng: np.random.Generator,
    size: int | Sequence[int] = DEFAULT_IMAGE_SIZE,
    *,
    label: int | None = None,
    class_colours: bool = True,
    diameter_range: tuple[float, float] | None = None,
) -> tuple[np.ndarray, list[ShapeInstance]]:
    """Render one scene.

    Args:
        rng: numpy Generator; the scene is a pure function of its state.
        size: (h, w) or a single int.
        label: ``None``: 1 to 4 shapes of random classes (the detection and
            segmentation sets); an index of ``SHAPE_CLASSES``: exactly one
            shape of that class (the classification set).
        class_colours: draw each shape's colour from its class's hue family
            (default); ``False``: any hue, so only the outline tells the class.
        diameter_range: circumscribed diameter as a fraction of min(h, w) for
            every class, instead of the per-class defaults.

    Returns:
        ``(image, instances)``: an HxWx3 uint8 RGB image and the shapes in
        painting order (1 to 4, each with a visible area >= 1% of the image
        and disjoint visible masks).
    """
    h, w = _as_size(size)
    side = min(h, w)
    min_area = _MIN_AREA_FRACTION * h * w
    bg, bg_refs = _background(rng, h, w)

    if label is not None and label not in range(len(SHAPE_CLASSES)):
        raise ValueError(f'label must be in 0..{len(SHAPE_CLASSES) - 1}, got {label!r}')
    forced = label
    target = int(rng.integers(1, 5)) if forced is None else 1
    polygons: list[list[tuple[float, float]]] = []
    labels: list[int] = []
    full_areas: list[int] = []
    id_map = np.zeros((h, w), np.uint8)  # 0 = background, k = shape k-1
    for attempt in range(1000):
        if len(polygons) == target or (polygons and attempt >= 30 * target):
            break
        label = int(rng.integers(len(SHAPE_CLASSES))) if forced is None else forced
        lo, hi = _DIAMETER_RANGE[label] if diameter_range is None else diameter_range
        radius = rng.uniform(lo, hi) * side / 2
        cx = rng.uniform(radius + 1, w - radius - 1)
        cy = rng.uniform(radius + 1, h - radius - 1)
        theta = 0.0 if label == 0 else rng.uniform(0.0, 2 * np.pi)
        polygon = _shape_polygon(label, cx, cy, radius, theta)
        full = _rasterize(polygon, h, w)
        area = int(full.sum())
        if area < min_area:
            continue
        candidate = id_map.copy()
        candidate[full] = len(polygons) + 1
        visible = np.bincount(candidate.ravel(), minlength=len(polygons) + 2)
        if all(visible[k + 1] >= max(_MIN_VISIBLE_FRACTION * full_areas[k],
                                     min_area)
               for k in range(len(polygons))):
            polygons.append(polygon)
            labels.append(label)
            full_areas.append(area)
            id_map = candidate
    if not polygons:
        raise RuntimeError(f'could not place any shape in a {h}x{w} image')

    # Safety net: drop shapes whose visible area fell below 1% of the image
    # and repaint, so that the image shows exactly the annotated shapes.
    keep = list(range(len(polygons)))
    while True:
        id_map = np.zeros((h, w), np.uint8)
        for j, k in enumerate(keep):
            id_map[_rasterize(polygons[k], h, w)] = j + 1
        visible = np.bincount(id_map.ravel(), minlength=len(keep) + 1)
        small = [k for j, k in enumerate(keep) if visible[j + 1] < min_area]
        if not small:
            break
        keep = [k for k in keep if k not in small]

    img = bg
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    fg_colors: list[np.ndarray] = []
    instances = []
    for j, k in enumerate(keep):
        color = _pick_color(rng, labels[k], bg_refs, fg_colors, class_colours)
        fg_colors.append(color)
        # Low-contrast linear shading across the shape.
        amp = rng.uniform(0.0, 20.0)
        phi = rng.uniform(0.0, 2 * np.pi)
        t = (xx * np.cos(phi) + yy * np.sin(phi)) / side
        mask = id_map == j + 1
        shaded = color + amp * (t - t[mask].mean())[..., None]
        img = np.where(mask[..., None], shaded, img)
        instances.append(
            ShapeInstance(
                label=labels[k],
                polygon=polygons[k],
                mask=mask,
                color=tuple(int(c) for c in color)))
    img = img + rng.normal(0.0, 2.0, img.shape)
    image = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return image, instances


def label_map(instances: Iterable[ShapeInstance],
              size: int | Sequence[int]) -> np.ndarray:
    """ADE-style uint8 label map: 0 = background, k = SHAPE_CLASSES[k-1]."""
    h, w = _as_size(size)
    labels = np.zeros((h, w), np.uint8)
    for inst in instances:
        labels[inst.mask] = inst.label + 1
    return labels

