"""COCO polygons and boxes of bool masks, traced along pixel edges."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def _boundary_cycles(mask: np.ndarray) -> list[list[tuple[int, int]]]:
    """Trace the pixel-edge boundaries of a bool mask.

    Vertices are pixel corners (pixel (r, c) spans [c, c+1] x [r, r+1]).
    Foreground is 4-connected: outer boundaries run clockwise on screen
    (positive shoelace area), hole boundaries counter-clockwise.
    """
    padded = np.pad(mask, 1)
    inner = padded[1:-1, 1:-1]
    edges: dict[tuple[int, int], list[tuple[int, int]]] = {}
    sides = (
        (inner & ~padded[:-2, 1:-1], 0, 0, (1, 0)),  # top, going +x
        (inner & ~padded[1:-1, 2:], 1, 0, (0, 1)),  # right, going +y
        (inner & ~padded[2:, 1:-1], 1, 1, (-1, 0)),  # bottom, going -x
        (inner & ~padded[1:-1, :-2], 0, 1, (0, -1)),  # left, going -y
    )
    for side, ox, oy, step in sides:
        ys, xs = np.nonzero(side)
        for x, y in zip((xs + ox).tolist(), (ys + oy).tolist()):
            edges.setdefault((x, y), []).append(step)

    used: set[tuple[tuple[int, int], tuple[int, int]]] = set()
    cycles = []
    for start in sorted(edges, key=lambda v: (v[1], v[0])):
        for first in edges[start]:
            if (start, first) in used:
                continue
            verts: list[tuple[int, int]] = []
            vertex, step, prev = start, first, None
            while True:
                used.add((vertex, step))
                if step != prev:
                    verts.append(vertex)
                prev = step
                vertex = (vertex[0] + step[0], vertex[1] + step[1])
                options = edges[vertex]
                # Two exits only at a diagonal (saddle) vertex: turning
                # right keeps diagonal pixels apart (4-connectivity).
                nxt = options[0] if len(options) == 1 else (-step[1], step[0])
                if (vertex, nxt) in used:
                    break
                step = nxt
            if prev == first and len(verts) > 1:
                verts.pop(0)  # start vertex lies inside a straight run
            cycles.append(verts)
    return cycles


def _signed_area(cycle: Sequence[tuple[int, int]]) -> float:
    xs = np.array([v[0] for v in cycle], np.float64)
    ys = np.array([v[1] for v in cycle], np.float64)
    return 0.5 * float(np.sum(xs * np.roll(ys, -1) - np.roll(xs, -1) * ys))


def mask_to_polygons(mask: np.ndarray) -> list[list[float]]:
    """Convert a bool mask to COCO polygons ``[[x0, y0, x1, y1, ...], ...]``.

    Vertices lie on pixel corners, so pycocotools rasterizes the union of
    the polygons back to exactly ``mask``. Regions with holes are cut into
    hole-free horizontal bands, since COCO polygons cannot express holes.
    """
    polygons = []
    pending = [(0, np.asarray(mask, dtype=bool))]
    while pending:
        offset, part = pending.pop()
        rows = np.flatnonzero(part.any(axis=1))
        if rows.size == 0:
            continue
        part = part[rows[0]:rows[-1] + 1]
        offset += int(rows[0])
        cycles = _boundary_cycles(part)
        holes = [c for c in cycles if _signed_area(c) < 0]
        if holes:
            # Cutting at a hole's top row opens that hole in the lower band.
            cut = min(y for cycle in holes for _, y in cycle)
            pending.append((offset + cut, part[cut:]))
            pending.append((offset, part[:cut]))
            continue
        for cycle in cycles:
            polygons.append(
                [float(v) for x, y in cycle for v in (x, y + offset)])
    return polygons


def mask_bbox(mask: np.ndarray) -> list[float]:
    """COCO ``[x, y, w, h]`` of a non-empty bool mask, in pixel units."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if ys.size == 0:
        raise ValueError('empty mask has no bounding box')
    return [float(xs[0]), float(ys[0]), float(xs[-1] - xs[0] + 1),
            float(ys[-1] - ys[0] + 1)]
