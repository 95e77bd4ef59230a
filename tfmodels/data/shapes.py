"""Signed-distance shape primitives on pixel grids (negative inside, in frame units; every argument
broadcasts over [m, R, R]), and their anti-aliased masks: what ``tfmodels.data.garments`` draws with."""

from __future__ import annotations

import numpy as np


def trapezoid(x, y, y0, y1, hw0, hw1, cx=0.0):
    """Symmetric trapezoid about x = cx: half-width hw0 at y0 (top), hw1 at y1 (bottom)."""
    slope = (hw1 - hw0) / (y1 - y0)
    t = (y - y0)
    hw = hw0 + slope * t
    side = (np.abs(x - cx) - hw) / np.sqrt(1 + slope * slope)
    return np.maximum(side, np.maximum(y0 - y, y - y1))


def box(x, y, cx, cy, hw, hh, r=0.0):
    """Rounded box centred at (cx, cy) with half sizes (hw, hh) and corner radius r."""
    qx = np.abs(x - cx) - (hw - r)
    qy = np.abs(y - cy) - (hh - r)
    outside = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2)
    return outside + np.minimum(np.maximum(qx, qy), 0) - r


def ellipse(x, y, cx, cy, a, b):
    """Approximate signed distance to an axis-aligned ellipse with radii a, b."""
    return (np.sqrt(((x - cx) / a) ** 2 + ((y - cy) / b) ** 2) - 1.0) * np.minimum(a, b)


def limb(x, y, x0, y0, x1, y1, r0, r1):
    """Square-ended band from (x0, y0) to (x1, y1), half-width r0 tapering to r1 (a sleeve, a leg)."""
    dx, dy = x1 - x0, y1 - y0
    length = np.sqrt(dx * dx + dy * dy)
    ux, uy = dx / length, dy / length
    t = (x - x0) * ux + (y - y0) * uy
    s = np.abs((x - x0) * uy - (y - y0) * ux)
    hw = r0 + (r1 - r0) * np.clip(t / length, 0, 1)
    return np.maximum(s - hw, np.maximum(-t, t - length))


def polygon(x, y, pts):
    """Convex polygon from a list of (px, py) vertices (arrays broadcastable to [m, 1, 1])."""
    cx = sum(p[0] for p in pts) / len(pts)
    cy = sum(p[1] for p in pts) / len(pts)
    d = None
    for (ax, ay), (bx, by) in zip(pts, pts[1:] + pts[:1]):
        ex, ey = bx - ax, by - ay
        norm = np.sqrt(ex * ex + ey * ey) + 1e-9
        nx, ny = ey / norm, -ex / norm
        # Orient the normal outwards (away from the centroid).
        flip = np.where((cx - ax) * nx + (cy - ay) * ny > 0, np.float32(-1), np.float32(1))
        e = ((x - ax) * nx + (y - ay) * ny) * flip
        d = e if d is None else np.maximum(d, e)
    return d


def line(g, width, pix):
    """Anti-aliased line of half-width ``width`` along the zero set of g; fades when thinner than a pixel."""
    w = np.maximum(width, pix * 0.5)
    strength = np.minimum(1.0, width / (pix * 0.5))
    return strength * np.clip(0.5 - (np.abs(g) - w) / pix, 0, 1)


def fill(d, pix):
    """Anti-aliased inside mask of the signed distance d (1 inside, 0 outside, a pixel-wide ramp)."""
    return np.clip(0.5 - d / pix, 0, 1)
