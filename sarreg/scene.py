"""Large-scene geometry: the overlap of two footprints and the grid of tiles spread over it.

Used by :mod:`sarreg.tiles` for images larger than the coarse pass's read: after the coarse
registration on decimated reads, full-resolution reference windows (tiles) are placed over the
overlap of the two footprints (how many and how large: :func:`tile_grid`), and each is paired
with the moving-image window that the coarse transform maps onto it.

Conventions (docs/architecture.md): pixel centres ``(x, y)``, top-left centre at ``(0, 0)``; a
pixel's area spans ``x - 0.5 .. x + 0.5``; the 3x3 ``M`` maps moving to reference pixel centres.
Windows are rasterio ``Window(col_off, row_off, width, height)`` in full-resolution pixels.
"""

from __future__ import annotations

import math

import numpy as np
from rasterio.windows import Window
from shapely.geometry import Polygon, box

from sarreg import geometry


def overlap_in_reference_pixels(
    ref_shape: tuple[int, int],
    mov_shape: tuple[int, int],
    matrix: np.ndarray,
    ref_transform=None,
) -> Polygon:
    """Overlap of the reference footprint and the (corrected) moving footprint, as a polygon in
    reference pixel-centre coordinates.

    The moving outline is placed by ``matrix`` (moving px -> reference px, e.g. the coarse
    registration). With a reference geotransform the intersection is computed with shapely in
    the reference CRS (map units), as the footprints of both images, then mapped to reference
    pixels; without one, in reference pixels directly (the result is the same up to rounding).
    """
    ref_ring = geometry.pixel_outline(ref_shape, 21)
    mov_ring = geometry.apply_matrix(matrix, geometry.pixel_outline(mov_shape, 21))
    if ref_transform is not None:
        ref_poly = Polygon(geometry.pixel_to_map(ref_transform, ref_ring))
        mov_poly = Polygon(geometry.pixel_to_map(ref_transform, mov_ring))
    else:
        ref_poly, mov_poly = Polygon(ref_ring), Polygon(mov_ring)
    if not mov_poly.is_valid:
        mov_poly = mov_poly.buffer(0)
    inter = ref_poly.intersection(mov_poly)
    if inter.is_empty or inter.area <= 0:
        return Polygon()
    if ref_transform is None:
        return inter
    hull = inter.convex_hull if inter.geom_type != "Polygon" else inter
    return Polygon(geometry.map_to_pixel(ref_transform, np.asarray(hull.exterior.coords)))


#: largest automatic tile side (tile-resolution pixels) and smallest. 384: on the scaling
#: benchmark's 2048 to 10000 px pairs (``scripts/bench_scaling.py``) 512-px tiles cost 15-20 %
#: more time for errors of 0.010-0.024 px instead of 0.019-0.024 px
TILE_SIZE = 384
MIN_TILE_SIZE = 256
#: automatic tiles cover at most this fraction of the overlap (never a dense pass)
MAX_TILE_COVER = 0.5


def tile_grid(
    overlap_area: float, linear: bool, tiles: int | None = None, tile_size: int | None = None
) -> tuple[int, int]:
    """Tiles per side and tile side (tile-resolution pixels) for an overlap of
    ``overlap_area`` square tile-resolution pixels; ``tiles`` / ``tile_size`` override.

    The rule: enough tie points spread over the whole overlap for the model, a cost that does
    not grow with the image. Linear models get a 2 x 2 grid (3 x 3 above a 6000-pixel
    overlap side, for leverage), the non-linear ones (poly2, poly3, tps) 3 x 3 (4 x 4 above),
    tiles of at most :data:`TILE_SIZE` pixels; automatic tiles are shrunk (not below
    :data:`MIN_TILE_SIZE`) to cover at most :data:`MAX_TILE_COVER` of the overlap, and the grid
    never has more tiles per side than fit side by side.
    """
    side = math.sqrt(max(float(overlap_area), 1.0))
    if tiles is None:
        n = (2 if linear else 3) + (1 if side > 6000 else 0)
        n = max(1, min(n, int(side // MIN_TILE_SIZE)))
    else:
        n = int(tiles)
    if tile_size is None:
        size = min(TILE_SIZE, int(math.sqrt(MAX_TILE_COVER * side * side) / n))
        size = max(size, min(MIN_TILE_SIZE, int(side)))
    else:
        size = int(tile_size)
    return n, _even_down(size)


def plan_tiles(
    overlap: Polygon,
    ref_shape: tuple[int, int],
    n: int,
    size: int,
    min_fraction: float = 0.5,
) -> list[Window]:
    """Up to ``n x n`` reference windows of ``size x size`` spread over ``overlap`` out to its
    edges (offsets and size rounded down to even numbers, see :func:`_even_down`).

    Tile centres form an even ``n x n`` grid from one side of the overlap's bounding box to the
    other (the outer tiles touch it: the widest spread of tie points, the best leverage for a
    global fit); a single tile sits at the centre. Each tile is kept inside the image, and
    when less than ``min_fraction`` of its area lies in the overlap (a corner of a rotated
    footprint) it is moved towards the overlap's centroid until it does, or dropped.
    Duplicate windows (tiles larger than the cells) are merged.
    """
    h, w = ref_shape
    size = _even_down(int(min(size, h, w)))
    if overlap.is_empty:
        return []
    x0, y0, x1, y1 = overlap.bounds
    centroid = overlap.centroid
    gx, gy = float(centroid.x), float(centroid.y)

    def centres(lo: float, hi: float) -> list[float]:
        if n == 1 or hi - lo <= size:
            return [0.5 * (lo + hi)] if n == 1 else list(np.linspace(lo, hi, 2 * n + 1)[1::2])
        return list(np.linspace(lo + size / 2.0, hi - size / 2.0, n))

    def window_at(cx: float, cy: float) -> tuple[int, int]:
        c = _even_down(int(min(max(round(cx - size / 2.0 + 0.5), 0), w - size)))
        r = _even_down(int(min(max(round(cy - size / 2.0 + 0.5), 0), h - size)))
        return c, r

    wins: list[Window] = []
    seen = set()
    for cy in centres(y0, y1):
        for cx in centres(x0, x1):
            for f in (0.0, 0.25, 0.5, 0.75):
                c, r = window_at(cx + f * (gx - cx), cy + f * (gy - cy))
                tile = box(c - 0.5, r - 0.5, c + size - 0.5, r + size - 0.5)
                if overlap.intersection(tile).area >= min_fraction * tile.area:
                    break
            else:
                continue
            if (c, r) not in seen:
                seen.add((c, r))
                wins.append(Window(c, r, size, size))
    return wins


def moving_window(
    matrix: np.ndarray,
    ref_win: Window,
    mov_shape: tuple[int, int],
    margin: float,
    multiple: int = 2,
) -> Window | None:
    """Moving-image window that ``matrix`` (moving -> reference px) maps onto ``ref_win``,
    grown by ``margin`` moving pixels and clipped to the image, with even offsets and a size
    that is a multiple of ``multiple`` (even; e.g. twice an integer decimation, so that a
    decimated read bins whole pixels); None if it falls outside."""
    c, r = float(ref_win.col_off), float(ref_win.row_off)
    ww, hh = float(ref_win.width), float(ref_win.height)
    corners = np.array(
        [[c - 0.5, r - 0.5], [c + ww - 0.5, r - 0.5], [c + ww - 0.5, r + hh - 0.5],
         [c - 0.5, r + hh - 0.5]]
    )  # fmt: skip
    pts = geometry.apply_matrix(np.linalg.inv(matrix), corners)
    h, w = mov_shape
    x0 = _even_down(max(0, math.floor(pts[:, 0].min() - margin)))
    y0 = _even_down(max(0, math.floor(pts[:, 1].min() - margin)))
    x1 = min(w, math.ceil(pts[:, 0].max() + margin) + 1)
    y1 = min(h, math.ceil(pts[:, 1].max() + margin) + 1)
    x1 -= (x1 - x0) % multiple
    y1 -= (y1 - y0) % multiple
    if x1 - x0 < 16 or y1 - y0 < 16:
        return None
    return Window(x0, y0, x1 - x0, y1 - y0)


def _even_down(n: int) -> int:
    """``n`` rounded down to an even number.

    Tiles have even offsets and sizes: the network's stride-2 stages then see the same pixel
    phase as on the whole image, and an odd-sized input would shift its keypoints by about
    half a pixel (bilinear upsampling of the low-resolution maps to an odd size).
    """
    return n - n % 2


def region_grid(shape: tuple[int, int], n: int) -> list[Window]:
    """An ``n x n`` partition of an ``(H, W)`` grid into windows (for per-region residuals)."""
    h, w = shape
    xs = np.linspace(0, w, n + 1).round().astype(int)
    ys = np.linspace(0, h, n + 1).round().astype(int)
    return [
        Window(int(xs[j]), int(ys[i]), int(xs[j + 1] - xs[j]), int(ys[i + 1] - ys[i]))
        for i in range(n)
        for j in range(n)
        if xs[j + 1] > xs[j] and ys[i + 1] > ys[i]
    ]
