"""Point labels that do not overlap: each label takes the first of a ring of offsets around its point, nearest
first, whose box (measured by the renderer) overlaps no label placed before it, no marker and stays inside the
axes; far offsets get a thin leader line. Hand-written because adjustText is not a dependency, and a greedy
ring search is enough for the few dozen points a report plots."""
from __future__ import annotations

import math

RADII = (5, 12, 20, 30, 42, 56, 72)  # points from the marker's centre
ANGLES = (20, -20, 160, 200, 90, 270, 55, -55, 125, 235, 0, 180)  # degrees; right of the point first


def _overlaps(a, b, pad=1.5) -> bool:
    return not (a.x1 + pad < b.x0 or b.x1 + pad < a.x0 or a.y1 + pad < b.y0 or b.y1 + pad < a.y0)


def place_labels(ax, xs, ys, texts, fontsize=8.5, marker_pt=5.0) -> list:
    """Annotate (x, y) points of `ax` with `texts` without overlaps where the ring allows; returns the artists.
    Call after the axes' limits and scales are final (positions are measured in display space)."""
    from matplotlib.transforms import Bbox
    fig = ax.figure
    fig.canvas.draw()  # fixes the layout so that display coordinates are final
    renderer = fig.canvas.get_renderer()
    to_px = fig.dpi / 72.0
    pts = [ax.transData.transform((x, y)) for x, y in zip(xs, ys)]
    r = marker_pt * to_px
    placed = [Bbox.from_extents(px - r, py - r, px + r, py + r) for px, py in pts]  # markers are obstacles
    frame = ax.get_window_extent(renderer)
    artists = []
    order = sorted(range(len(pts)), key=lambda i: (pts[i][0], -pts[i][1]))  # left to right, top first
    for i in order:
        best = None
        for radius in RADII:
            for ang in ANGLES:
                dx, dy = radius * math.cos(math.radians(ang)), radius * math.sin(math.radians(ang))
                ha = "left" if dx > 1 else ("right" if dx < -1 else "center")
                va = "bottom" if dy > 1 else ("top" if dy < -1 else "center")
                ann = ax.annotate(texts[i], (xs[i], ys[i]), textcoords="offset points", xytext=(dx, dy),
                                  fontsize=fontsize, ha=ha, va=va, annotation_clip=False)
                box = ann.get_window_extent(renderer)
                inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
                if inside and not any(_overlaps(box, p) for p in placed):
                    best = (ann, box, radius)
                    break
                ann.remove()
            if best:
                break
        if best is None:  # nowhere free: the nearest spot right of the point, overlapping as little as it must
            ann = ax.annotate(texts[i], (xs[i], ys[i]), textcoords="offset points", xytext=(RADII[0], 0),
                              fontsize=fontsize, ha="left", va="center")
            best = (ann, ann.get_window_extent(renderer), RADII[0])
        ann, box, radius = best
        if radius > RADII[0]:  # away from its point: a leader line says which point it names
            ann.remove()
            ann = ax.annotate(texts[i], (xs[i], ys[i]), textcoords="offset points", xytext=ann.xyann,
                              fontsize=fontsize, ha=ann.get_ha(), va=ann.get_va(),
                              arrowprops=dict(arrowstyle="-", lw=0.7, color="0.3", shrinkA=1, shrinkB=3.5))
        ann.set_in_layout(False)  # a layout engine must not move the axes after the labels were measured
        placed.append(box)
        artists.append(ann)
    return artists
