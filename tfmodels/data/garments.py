"""Procedural garments: clothing-like product photos at any resolution, from a seed.

Every item is a small set of numbers (category, colour, pattern, sleeve and hem
length, fit, ...) drawn by :func:`sample_garments`; :func:`render_garments`
turns them into pixels at whatever resolution is asked, so the same catalogue
can feed a 32 px test, a 64 px GAN and a 224 px CNN without resampling.

How a picture is drawn (all vectorised NumPy over a batch of items of one
category: coordinate grids of shape [1, R, R] broadcast against per-item
parameters of shape [m, 1, 1]):

- Coordinates are x (left to right) and y (top to bottom) in [-1, 1]; one pixel
  is ``2 / R`` wide, which is the only place the resolution enters.
- Each category's silhouette is a *signed distance* d(x, y) (negative inside),
  built from polygons, trapezoids, rounded boxes, ellipses and tapered
  segments with min (union) and max (intersection). Coverage is the
  anti-aliased ``clip(0.5 - d / pixel, 0, 1)``, so edges are smooth at any size.
- Fabric colour = base colour mixed with a pattern colour by a pattern map
  (plain, stripes, dots, gingham checks) whose edges are also anti-aliased and
  whose contrast fades where the pattern period approaches the pixel size.
- Shading: darker near the silhouette edge (depth from d), soft folds, a light
  gradient from the top left, darker details (neckline interior, seams, cuffs,
  pockets, lapels, laces) and trims (shoe soles, buttons, bag handle).
- Background: light off-white with a faint vignette and a soft drop shadow taken
  from the silhouette distance shifted down and to the right.

Everything is deterministic: the same parameters give the same pixels.
``RENDER_VERSION`` is part of :class:`GarmentImages`' fingerprint (the key of
on-disk image caches) and must be bumped whenever the drawing changes.
"""

from __future__ import annotations

import hashlib

import numpy as np

from tfmodels.data import shapes
from tfmodels.data.dataset import ImageSource

RENDER_VERSION = "garments-v4"

CATEGORIES = [
    "t-shirt",
    "long-sleeve top",
    "dress",
    "trousers",
    "skirt",
    "shoe",
    "bag",
    "coat",
]
"""Category names; a garment's ``category`` parameter indexes this list."""

PATTERNS = ["plain", "stripes", "dots", "checks"]
"""Pattern names; a garment's ``pattern`` parameter indexes this list."""

PARAM_NAMES = (
    "category", "hue", "saturation", "value", "pattern", "pattern_freq", "pattern_duty",
    "pattern_vertical", "pattern_hue", "pattern_saturation", "pattern_value", "sleeve",
    "length", "width", "neck", "fold", "trim", "background",
)
"""Keys of the parameter dict; every array has shape [n]."""

DEFAULT_RESOLUTION = 256
"""Side of the image ``GarmentImages.load`` returns."""


# --------------------------------------------------------------------------- sampling


def sample_garments(n: int, seed: int = 0) -> dict:
    """Draws the parameters of ``n`` garments.

    Args:
      n: number of garments.
      seed: seed of the NumPy generator; the same (n, seed) gives the same dict.

    Returns:
      dict name -> array [n] (see ``PARAM_NAMES``): ``category`` int32 index into
      CATEGORIES; ``pattern`` int32 index into PATTERNS; colours as HSV in [0, 1]
      (``hue``, ``saturation``, ``value`` = shade, and the same for the pattern
      colour); ``pattern_freq`` in cycles per unit of the [-1, 1] frame;
      ``pattern_duty`` stripe/dot thickness; ``pattern_vertical`` 0/1;
      ``sleeve``, ``length``, ``width`` (fit), ``neck`` (style), ``fold``
      (fold phase), ``trim`` (trim colour choice), ``background`` (tint), all
      in [0, 1].
    """
    if n < 0:
        raise ValueError(f"sample_garments: n must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    f = lambda a: np.asarray(a, dtype=np.float32)  # noqa: E731
    category = rng.integers(0, len(CATEGORIES), size=n).astype(np.int32)
    # Fashion colours: a third are neutrals (black, white, grey, beige, navy).
    neutral = rng.random(n) < 0.33
    hue = rng.random(n)
    sat = np.where(neutral, rng.uniform(0.0, 0.15, n), rng.uniform(0.25, 0.9, n))
    val_neutral = rng.choice([0.13, 0.3, 0.55, 0.8, 0.93], size=n) + rng.uniform(-0.05, 0.05, n)
    val = np.where(neutral, val_neutral, rng.uniform(0.3, 0.95, n))
    pattern = rng.choice(len(PATTERNS), size=n, p=[0.45, 0.2, 0.15, 0.2]).astype(np.int32)
    freq = rng.uniform(1.6, 4.5, n)
    duty = rng.uniform(-0.35, 0.35, n)
    vertical = (rng.random(n) < 0.35).astype(np.float32)
    # Pattern colour: mostly white or near-black on the base, sometimes another hue.
    kind = rng.choice(3, size=n, p=[0.45, 0.25, 0.30])
    p_hue = np.where(kind == 2, rng.random(n), hue)
    p_sat = np.where(kind == 2, rng.uniform(0.3, 0.9, n), rng.uniform(0.0, 0.08, n))
    p_val = np.where(kind == 0, rng.uniform(0.9, 0.98, n),
                     np.where(kind == 1, rng.uniform(0.08, 0.2, n), rng.uniform(0.35, 0.95, n)))
    # Keep the pattern visible: push its shade away from the base shade when too close.
    close = np.abs(p_val - val) < 0.3
    p_val = np.where(close, np.where(val > 0.55, val - 0.45, val + 0.45), p_val).clip(0.05, 0.98)
    return {
        "category": category,
        "hue": f(hue),
        "saturation": f(sat.clip(0, 1)),
        "value": f(val.clip(0.05, 0.97)),
        "pattern": pattern,
        "pattern_freq": f(freq),
        "pattern_duty": f(duty),
        "pattern_vertical": f(vertical),
        "pattern_hue": f(p_hue),
        "pattern_saturation": f(p_sat),
        "pattern_value": f(p_val),
        "sleeve": f(rng.random(n)),
        "length": f(rng.random(n)),
        "width": f(rng.random(n)),
        "neck": f(rng.random(n)),
        "fold": f(rng.random(n)),
        "trim": f(rng.random(n)),
        "background": f(rng.random(n)),
    }


def check_params(params: dict) -> int:
    """Validates a parameter dict and returns the number of garments."""
    missing = [k for k in PARAM_NAMES if k not in params]
    if missing:
        raise ValueError(f"garment params: missing keys {missing}")
    n = len(params["category"])
    for k in PARAM_NAMES:
        if np.shape(params[k]) != (n,):
            raise ValueError(f"garment params: {k!r} has shape {np.shape(params[k])}, expected ({n},)")
    cat = np.asarray(params["category"])
    if n and (cat.min() < 0 or cat.max() >= len(CATEGORIES)):
        raise ValueError(f"garment params: category out of range [0, {len(CATEGORIES)})")
    return n


# --------------------------------------------------------------------------- geometry
# Colour; the signed-distance primitives are tfmodels.data.shapes.


def _hsv_to_rgb(h, s, v):
    """Vectorised HSV -> RGB; inputs [...], output [..., 3] float32."""
    h6 = (h % 1.0) * 6.0
    c = v * s
    xx = c * (1 - np.abs(h6 % 2 - 1))
    z = np.zeros_like(h6)
    sector = np.floor(h6).astype(int) % 6
    r = np.choose(sector, [c, xx, z, z, xx, c])
    g = np.choose(sector, [xx, c, c, xx, z, z])
    b = np.choose(sector, [z, z, xx, c, c, xx])
    m = v - c
    return np.stack([r + m, g + m, b + m], axis=-1).astype(np.float32)


# --------------------------------------------------------------------------- silhouettes
# Each returns (d, dark, trim): silhouette distance, darkening map in [0, 1] for
# details, and a mask in [0, 1] where the trim colour replaces the fabric.


def _top(P, x, y, pix, long_sleeve: bool, coat: bool):
    """T-shirt, long-sleeve top and coat: body, two sleeves, neckline."""
    s, l, w, nk = P["sleeve"], P["length"], P["width"], P["neck"]
    if coat:
        neck_y, hem = -0.85, 0.68 + 0.27 * l
        bw = 0.37 + 0.07 * w
        hem_w = bw * 1.16
    else:
        neck_y, hem = -0.7, 0.4 + 0.35 * l
        bw = 0.32 + 0.08 * w
        hem_w = bw * (0.93 + 0.1 * w)
    y = y + (neck_y + hem) / 2  # centre the garment vertically
    nw = 0.13 + 0.02 * w
    sh_y = neck_y + 0.1
    body = shapes.polygon(x, y, [(-nw, neck_y), (nw, neck_y), (bw, sh_y), (hem_w, hem), (-hem_w, hem), (-bw, sh_y)])
    if long_sleeve or coat:
        angle = np.deg2rad(62 + 10 * w)
        slen = (0.95 if coat else 0.8) + 0.2 * s
        r0, r1 = 0.14 + 0.02 * w, 0.085 + 0.02 * w
    else:
        angle = np.deg2rad(32 + 6 * w)
        slen = 0.2 + 0.22 * s
        r0, r1 = 0.14, 0.11 + 0.02 * w
    x0 = bw - 0.1
    y0 = sh_y + 0.11
    dxs, dys = np.cos(angle) * slen, np.sin(angle) * slen
    sleeves = np.minimum(shapes.limb(x, y, x0, y0, x0 + dxs, y0 + dys, r0, r1),
                         shapes.limb(x, y, -x0, y0, -x0 - dxs, y0 + dys, r0, r1))
    # The sleeve's upper edge must not stand above the (extended) shoulder line.
    slope = (sh_y - neck_y) / (bw - nw)
    below_shoulder = (neck_y + slope * (np.abs(x) - nw) - y) / np.sqrt(1 + slope * slope)
    sleeves = np.maximum(sleeves, below_shoulder)
    collar_back = shapes.ellipse(x, y, 0.0, neck_y, nw, 0.035)
    d = np.minimum(np.minimum(body, sleeves), collar_back)
    # Neckline: a round scoop (neck < 0.6) or a V; inside it the darker back of the garment.
    depth = 0.07 + 0.05 * nk
    scoop = shapes.ellipse(x, y, 0.0, neck_y, nw * 0.95, depth)
    vee = shapes.polygon(x, y, [(-nw * 0.95, neck_y - 0.01), (nw * 0.95, neck_y - 0.01), (0.0, neck_y + 0.1 + 0.15 * nk)])
    hole = np.where(nk < 0.6, scoop, vee) if not coat else shapes.polygon(
        x, y, [(-nw, neck_y - 0.01), (nw, neck_y - 0.01), (0.0, neck_y + 0.38 + 0.1 * nk)])
    inside = shapes.fill(hole, pix) * (y > neck_y - 0.005)
    dark = 0.55 * inside + 0.35 * shapes.line(hole, 0.012, pix) * (1 - inside)
    dark = dark + 0.25 * shapes.line(y - hem + 0.05, 0.004, pix) * shapes.fill(body, pix)  # hem stitching
    trim = np.zeros_like(d)
    if long_sleeve or coat:
        # Cuffs: a seam across each sleeve near its end.
        ex, ey = x0 + dxs, y0 + dys
        ux, uy = np.cos(angle), np.sin(angle)
        cx, cy = ex - 0.09 * ux, ey - 0.09 * uy  # a point on the cuff seam of the right sleeve
        along_y = (y - cy) * uy
        cuff = np.minimum(np.abs((x - cx) * ux + along_y), np.abs((-x - cx) * ux + along_y))  # both sleeves
        dark = dark + 0.3 * shapes.line(cuff, 0.006, pix) * shapes.fill(sleeves, pix)
    # Sleeve seams where sleeve meets body.
    dark = dark + 0.22 * shapes.line(np.maximum(body, -sleeves), 0.006, pix) * shapes.fill(sleeves, pix)
    if coat:
        # Lapels, centre front, buttons, pockets.
        lapel_end = neck_y + 0.38 + 0.1 * nk
        lapels = shapes.polygon(x, y, [(-nw - 0.08, neck_y), (nw + 0.08, neck_y), (0.0, lapel_end + 0.08)])
        dark = dark + 0.3 * shapes.line(lapels, 0.008, pix) * (1 - inside)
        front = shapes.line(x - 0.015, 0.005, pix) * (y > lapel_end) * (y < hem)
        dark = dark + 0.35 * front
        by = lapel_end + 0.12 + np.arange(4, dtype=np.float32)[:, None, None, None] * np.float32(0.16)
        buttons = np.min(shapes.ellipse(x[None], y[None], 0.075, by, 0.028, 0.028), axis=0)
        trim = np.maximum(trim, shapes.fill(buttons, pix) * (by.max(axis=0) < hem - 0.05))
        pocket_y = hem - 0.25
        pockets = np.minimum(shapes.box(x, y, 0.22 + 0.02 * w, pocket_y, 0.1, 0.004),
                             shapes.box(x, y, -0.22 - 0.02 * w, pocket_y, 0.1, 0.004))
        dark = dark + 0.35 * shapes.fill(pockets - 0.004, pix)
    return d, np.clip(dark, 0, 1), trim


def _dress(P, x, y, pix):
    s, l, w, nk = P["sleeve"], P["length"], P["width"], P["neck"]
    top, waist, hem = -0.82, -0.28, 0.15 + 0.72 * l
    y = y + (top + hem) / 2
    bodice = shapes.trapezoid(x, y, top + 0.06, waist, 0.2 + 0.02 * w, 0.15 + 0.03 * w)
    hem_hw = 0.3 + 0.3 * w + 0.1 * l
    skirt_sides = shapes.trapezoid(x, y, waist - 0.01, hem + 1.0, 0.15 + 0.03 * w, 0.15 + 0.03 * w + (hem_hw - 0.15) * (1.0 + 1.0 / (hem - waist)))
    skirt = np.maximum(skirt_sides, y - hem + 0.06 * (x / hem_hw) ** 2)
    # Sleeveless dresses get straps, others short sleeves.
    strap = np.minimum(shapes.box(x, y, 0.12, top + 0.03, 0.03, 0.06), shapes.box(x, y, -0.12, top + 0.03, 0.03, 0.06))
    slen = 0.12 + 0.22 * s
    sleeves = np.minimum(shapes.limb(x, y, 0.12, top + 0.1, 0.12 + 0.8 * slen, top + 0.1 + 0.55 * slen, 0.1, 0.085),
                         shapes.limb(x, y, -0.12, top + 0.1, -0.12 - 0.8 * slen, top + 0.1 + 0.55 * slen, 0.1, 0.085))
    arms = np.where(s < 0.4, strap, sleeves)
    d = np.minimum(np.minimum(bodice, skirt), arms)
    hole = shapes.ellipse(x, y, 0.0, top + 0.03, 0.11 + 0.02 * w, 0.07 + 0.08 * nk)
    inside = shapes.fill(hole, pix) * shapes.fill(bodice, pix)
    dark = 0.5 * inside + 0.3 * shapes.line(hole, 0.01, pix) * (1 - inside) * shapes.fill(d, pix)
    dark = dark + 0.35 * shapes.line(y - waist, 0.006, pix) * shapes.fill(d, pix)  # waist seam
    # A few soft vertical pleats in the skirt.
    pleat = np.cos(np.arctan2(x, (y - waist + 0.6)) * 14.0 + P["fold"] * 6.0)
    dark = dark + 0.08 * np.clip(pleat, 0, 1) * shapes.fill(skirt, pix) * (y > waist)
    return d, np.clip(dark, 0, 1), np.zeros_like(d)


def _trousers(P, x, y, pix):
    l, w = P["length"], P["width"]
    top, hem = -0.85, 0.3 + 0.55 * l
    y = y + (top + hem) / 2
    crotch = top + 0.45
    hip = 0.31 + 0.03 * w
    leg = 0.095 + 0.09 * w
    band = shapes.box(x, y, 0.0, top + 0.045, hip - 0.005, 0.045)
    seat = shapes.trapezoid(x, y, top + 0.05, crotch, hip, hip + 0.03)
    gap = 0.03
    legs = np.minimum(
        shapes.polygon(x, y, [(0.0, crotch - 0.02), (hip + 0.03, crotch - 0.15), (gap + 2 * leg, hem), (gap, hem)]),
        shapes.polygon(x, y, [(0.0, crotch - 0.02), (-hip - 0.03, crotch - 0.15), (-gap - 2 * leg, hem), (-gap, hem)]))
    d = np.minimum(np.minimum(band, seat), legs)
    inside = shapes.fill(d, pix)
    dark = 0.35 * shapes.line(y - top - 0.09, 0.006, pix) * inside  # waistband seam
    dark = dark + 0.3 * shapes.line(x - 0.05, 0.005, pix) * (y > top + 0.09) * (y < crotch - 0.08)
    dark = dark + 0.3 * shapes.line(shapes.ellipse(x, y, hip, top + 0.09, 0.13, 0.16), 0.005, pix) * inside * (y > top + 0.09)
    dark = dark + 0.3 * shapes.line(shapes.ellipse(x, y, -hip, top + 0.09, 0.13, 0.16), 0.005, pix) * inside * (y > top + 0.09)
    # Creases down the legs.
    crease = np.minimum(np.abs(x - (gap + leg) * (y - crotch) / (hem - crotch) - 0.17 * (hem - y) / (hem - crotch)),
                        np.abs(x + (gap + leg) * (y - crotch) / (hem - crotch) + 0.17 * (hem - y) / (hem - crotch)))
    dark = dark + 0.12 * shapes.line(crease, 0.006, pix) * inside * (y > crotch)
    dark = dark + 0.25 * shapes.line(y - hem + 0.04, 0.004, pix) * inside
    return d, np.clip(dark, 0, 1), np.zeros_like(d)


def _skirt(P, x, y, pix):
    l, w, nk = P["length"], P["width"], P["neck"]
    top, hem = -0.5 - 0.25 * l, 0.15 + 0.6 * l
    y = y + (top + hem) / 2
    waist_hw = 0.28 + 0.04 * w
    hem_hw = 0.34 + 0.32 * w + 0.12 * l
    band = shapes.box(x, y, 0.0, top + 0.05, waist_hw, 0.05)
    sides = shapes.trapezoid(x, y, top + 0.05, hem + 1.0, waist_hw, waist_hw + (hem_hw - waist_hw) * (1 + 1.0 / (hem - top - 0.05)))
    body = np.maximum(sides, y - hem + 0.07 * (x / hem_hw) ** 2)
    d = np.minimum(band, body)
    inside = shapes.fill(d, pix)
    dark = 0.35 * shapes.line(y - top - 0.1, 0.006, pix) * inside
    # Pleated (neck >= 0.5) or with a soft drape.
    pleat = np.cos(np.arctan2(x, (y - top + 0.5)) * 22.0 + P["fold"] * 6.0)
    dark = dark + np.where(nk >= 0.5, np.float32(0.18), np.float32(0.06)) * np.clip(pleat, 0, 1) * inside * (y > top + 0.1)
    dark = dark + 0.2 * shapes.line(y - hem + 0.07 * (x / hem_hw) ** 2 + 0.04, 0.004, pix) * inside
    return d, np.clip(dark, 0, 1), np.zeros_like(d)


def _shoe(P, x, y, pix):
    """Side view, toe to the right: a low sneaker (length 0) up to an ankle boot (length 1)."""
    l, w, nk = P["length"], P["width"], P["neck"]
    top = 0.02 - 0.48 * l  # top of the shaft
    sole_y = 0.34
    y = y + (top + sole_y + 0.07) / 2 - 0.03
    r = 0.07  # rounding of the shaft and vamp polygons
    sole = np.minimum(shapes.box(x, y, 0.0, sole_y, 0.8, 0.065, 0.06),
                      shapes.box(x, y, -0.55, sole_y + 0.01, 0.25, 0.075, 0.05))  # thicker heel
    shaft = shapes.polygon(x, y, [(-0.72 + r, sole_y), (-0.72 + r, top + 0.06 + r), (-0.6, top + r),
                            (-0.14, top + 0.05 + r), (-0.02 - r, top + 0.12 + r), (-0.02 - r, sole_y)]) - r
    toe_top = sole_y - 0.2 + 0.04 * w
    toe = shapes.polygon(x, y, [(-0.1, toe_top + r), (0.3, toe_top + r), (0.6 - r, toe_top + 0.05 + r),
                          (0.74 - r, sole_y - 0.1 + r), (0.74 - r, sole_y), (-0.1, sole_y)]) - r
    instep = shapes.polygon(x, y, [(-0.2, top + 0.09 + r), (0.3, toe_top + r), (0.3, sole_y), (-0.2, sole_y)]) - r
    toe_cap = shapes.ellipse(x, y, 0.5, sole_y - 0.02, 0.26, sole_y - toe_top - 0.02)
    tongue = shapes.ellipse(x, y, -0.11, top + 0.14, 0.09, 0.07)
    vamp = np.minimum(np.minimum(toe, instep), np.minimum(toe_cap, tongue))
    upper = np.maximum(np.minimum(shaft, vamp), y - sole_y)
    d = np.minimum(upper, sole)
    in_upper = shapes.fill(upper, pix)
    # Collar opening at the top of the shaft, a toe cap and the seam above the sole.
    opening = shapes.ellipse(x, y, -0.38, top + 0.06, 0.26, 0.05)
    dark = 0.6 * shapes.fill(opening, pix) * in_upper
    dark = dark + 0.25 * shapes.line(shapes.ellipse(x, y, 0.66, sole_y - 0.04, 0.3, 0.17), 0.005, pix) * in_upper * (x > 0.4)
    dark = dark + 0.25 * shapes.line(shapes.ellipse(x, y, -0.6, sole_y - 0.06, 0.22, 0.2 - 0.1 * l + 0.1), 0.005, pix) * in_upper
    # Laces (neck >= 0.5): short dark bars along the vamp.
    t = np.array([0.2, 0.4, 0.6, 0.8], np.float32)[:, None, None, None]
    lx = -0.12 + t * 0.4
    ly = top + 0.16 + t * (toe_top - top - 0.09) + 0.06
    bars = np.min(shapes.limb(x[None], y[None], lx - 0.06, ly - 0.035, lx + 0.06, ly + 0.035, 0.02, 0.02), axis=0)
    dark = dark + np.where(nk >= 0.5, np.float32(0.9), np.float32(0)) * shapes.fill(bars, pix) * in_upper
    dark = dark + 0.3 * shapes.line(np.maximum(upper, -sole), 0.006, pix)
    trim = shapes.fill(sole, pix) * (1 - in_upper)
    return d, np.clip(dark, 0, 1), trim


def _bag(P, x, y, pix):
    l, w, nk = P["length"], P["width"], P["neck"]
    hw, hh = 0.48 + 0.2 * w, 0.3 + 0.18 * l
    handle_h = 0.3 + 0.12 * nk
    body_top = -hh + 0.5 * handle_h - 0.1
    cy = body_top + hh
    body = shapes.box(x, y, 0.0, cy, hw, hh, 0.08)
    ring_outer = shapes.ellipse(x, y, 0.0, body_top + 0.02, 0.3, handle_h)
    ring = np.maximum(np.abs(ring_outer + 0.03) - 0.03, y - body_top - 0.02)
    d = np.minimum(body, ring)
    inside = shapes.fill(body, pix)
    flap_y = body_top + 0.55 * hh
    flap = shapes.polygon(x, y, [(-hw, body_top), (hw, body_top), (hw, flap_y), (0.0, flap_y + 0.12), (-hw, flap_y)])
    dark = 0.35 * shapes.line(flap, 0.007, pix) * inside * (y > body_top + 0.03)
    dark = dark + 0.25 * shapes.line(body + 0.05, 0.004, pix)  # stitching along the edge
    clasp = shapes.box(x, y, 0.0, flap_y + 0.08, 0.05, 0.035, 0.015)
    trim = np.maximum(shapes.fill(clasp, pix), shapes.fill(ring, pix) * (1 - inside))
    return d, np.clip(dark, 0, 1), trim


_SILHOUETTES = [
    lambda P, x, y, pix: _top(P, x, y, pix, long_sleeve=False, coat=False),
    lambda P, x, y, pix: _top(P, x, y, pix, long_sleeve=True, coat=False),
    _dress,
    _trousers,
    _skirt,
    _shoe,
    _bag,
    lambda P, x, y, pix: _top(P, x, y, pix, long_sleeve=True, coat=True),
]




def _zoom(cat: int, P: dict) -> np.ndarray:
    """Per-item scale so each garment fills most of the frame, as in product photos."""
    l, w = P["length"], P["width"]
    name = CATEGORIES[cat]
    if name == "trousers":
        return np.minimum(1.75 / (1.15 + 0.55 * l), 1.25)
    if name == "skirt":
        height = 0.65 + 0.85 * l
        hem_hw = 0.34 + 0.32 * w + 0.12 * l
        return np.clip(np.minimum(1.3 / height, 1.5 / (2 * hem_hw)), 1.0, 1.2)
    fixed = {"t-shirt": 1.12, "long-sleeve top": 1.08, "dress": 1.04, "shoe": 1.1, "bag": 1.1, "coat": 0.97}
    return np.full_like(l, fixed[name])


# --------------------------------------------------------------------------- rendering


def _pattern(P, x, y, pix):
    """Pattern map in [0, 1] (1 = pattern colour), anti-aliased, per item."""
    kinds = P["pattern"].reshape(-1)
    out = np.zeros((len(kinds),) + np.broadcast_shapes(x.shape, y.shape)[1:], np.float32)
    # Only draw each pattern for the items that wear it.
    for kind, draw in ((1, _stripes), (2, _dots), (3, _checks)):
        sel = np.flatnonzero(kinds == kind)
        if len(sel):
            out[sel] = draw({k: v[sel] for k, v in P.items()}, x, y, pix)
    return out


def _stripe_k(freq, pix):
    # Stripe edges ~1 px wide; the amplitude falls as the period nears the pixel size.
    return 1.0 / (2 * np.pi * freq * pix)


def _stripes(P, x, y, pix):
    freq = P["pattern_freq"]
    u = np.where(P["pattern_vertical"] > 0.5, x, y) + P["fold"]
    return np.clip(0.5 + _stripe_k(freq, pix) * (np.sin(2 * np.pi * freq * u) - P["pattern_duty"]), 0, 1)


def _checks(P, x, y, pix):
    """Gingham: two sets of stripes at half strength, full where they cross."""
    freq = P["pattern_freq"]
    k = _stripe_k(freq, pix)
    sx = np.clip(0.5 + k * (np.sin(2 * np.pi * freq * (x + P["fold"])) - 0.3), 0, 1)
    sy = np.clip(0.5 + k * (np.sin(2 * np.pi * freq * (y + P["fold"])) - 0.3), 0, 1)
    return 0.5 * (sx + sy)


def _dots(P, x, y, pix):
    """Polka dots on a staggered grid; fade to their mean coverage when cells near the pixel size."""
    dfreq = P["pattern_freq"] * 1.6  # dots look best denser than stripes
    cell = dfreq * pix  # one pixel in cell units
    gu = x * dfreq + P["fold"]
    gv = y * dfreq
    gu = gu + 0.5 * (np.floor(gv + 0.5) % 2)
    fu, fv = gu - np.round(gu), gv - np.round(gv)
    r = 0.22 + 0.1 * (P["pattern_duty"] + 0.35)
    dots = np.clip(0.5 - (np.sqrt(fu * fu + fv * fv) - r) / cell, 0, 1)
    fade = np.clip((cell - 0.25) / 0.25, 0, 1)
    return dots * (1 - fade) + fade * np.pi * r * r


def _render_group(cat: int, P: dict, resolution: int) -> np.ndarray:
    """Renders garments of one category; P holds [m, 1, 1] parameter arrays."""
    R = resolution
    pix = 2.0 / R
    coords = ((np.arange(R, dtype=np.float32) + 0.5) / R * 2 - 1).astype(np.float32)
    x = coords[None, None, :]
    y = coords[None, :, None]
    zoom = _zoom(cat, P).astype(np.float32)
    d, dark, trim = _SILHOUETTES[cat](P, x / zoom, y / zoom, pix / zoom)
    d = (d * zoom).astype(np.float32)
    dark, trim = dark.astype(np.float32), trim.astype(np.float32)
    alpha = shapes.fill(d, pix)[..., None]

    base = _hsv_to_rgb(P["hue"], P["saturation"], P["value"])  # [m,1,1,3]
    pcol = _hsv_to_rgb(P["pattern_hue"], P["pattern_saturation"], P["pattern_value"])
    p = _pattern(P, x, y, pix)[..., None]
    fabric = base * (1 - p) + pcol * p

    # Soft 3D look: darker towards the edge, folds, light from the top left.
    depth = np.clip(-d / 0.12, 0, 1)
    rim = 0.8 + 0.2 * np.sqrt(depth)
    phase = 2 * np.pi * P["fold"]
    folds = 1 + 0.045 * np.sin(2 * np.pi * (1.3 * x + 0.35 * y) + phase) + 0.03 * np.sin(2 * np.pi * (0.5 * x - 1.1 * y) + 2 * phase)
    light = 1.06 - 0.05 * (y + 1) - 0.03 * (x + 1)
    shade = (rim * folds * light)[..., None]
    fabric = fabric * shade + (0.05 * np.sqrt(depth) * (light - 0.95))[..., None]
    fabric = fabric * (1 - 0.45 * dark[..., None])

    # Trims: shoe soles white, dark or tan; buttons and handles a darker shade of the base.
    tr = P["trim"]
    sole_col = np.where(tr < 0.45, 0.94, np.where(tr < 0.8, 0.14, 0.62))
    sole_rgb = np.concatenate([sole_col, sole_col * np.where(tr >= 0.8, 0.82, 1.0),
                               sole_col * np.where(tr >= 0.8, 0.6, 1.0)], axis=-1)[..., None, :].reshape(base.shape)
    sole_rgb = sole_rgb.astype(np.float32)
    trim_rgb = sole_rgb if cat == CATEGORIES.index("shoe") else base * 0.55 + 0.04
    fabric = fabric * (1 - trim[..., None]) + (trim_rgb * shade) * trim[..., None]
    outline = np.clip(1 - np.abs(d) / (1.5 * pix), 0, 1) * (d < 0)
    fabric = fabric * (1 - 0.12 * outline[..., None])

    # Background: warm or cool off-white, vignette, soft shadow down and to the right.
    tint = P["background"]
    bg = np.concatenate([0.955 + 0.012 * tint, 0.95 + 0.004 * tint, 0.945 - 0.01 * tint], axis=-1)
    bg = bg.reshape(base.shape)
    vignette = (1 - 0.035 * (x * x + y * y))[..., None]
    shift = max(1, int(round(0.025 * R)))
    ds = np.pad(d, ((0, 0), (shift, 0), (shift, 0)), mode="edge")[:, :R, :R]
    shadow = 0.2 * np.clip(1 - np.maximum(ds, 0) / 0.1, 0, 1) ** 2
    back = bg * vignette * (1 - shadow[..., None])
    img = back * (1 - alpha) + fabric * alpha
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def render_garments(params: dict, indices=None, resolution: int = 64, chunk: int = 256) -> np.ndarray:
    """Draws garments as product photos.

    Runs on the host in NumPy, one category at a time in chunks of ``chunk``
    items (memory ~ chunk * R^2 * 4 bytes per temporary).

    Args:
      params: dict from :func:`sample_garments`.
      indices: which garments (int array); None = all.
      resolution: side R of the square images, any size >= 8.
      chunk: garments per vectorised batch.

    Returns:
      uint8 [len(indices), R, R, 3].
    """
    n = check_params(params)
    if resolution < 8:
        raise ValueError(f"render_garments: resolution must be >= 8, got {resolution}")
    idx = np.arange(n) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise ValueError(f"render_garments: indices out of range [0, {n})")
    out = np.empty((len(idx), resolution, resolution, 3), np.uint8)
    cats = np.asarray(params["category"])[idx]
    for cat in range(len(CATEGORIES)):
        where = np.flatnonzero(cats == cat)
        for start in range(0, len(where), chunk):
            pos = where[start:start + chunk]
            P = {k: np.asarray(params[k])[idx[pos]].reshape(-1, 1, 1) for k in PARAM_NAMES}
            P = {k: (v.astype(np.float32) if k not in ("category", "pattern") else v) for k, v in P.items()}
            out[pos] = _render_group(cat, P, resolution)
    return out


def params_fingerprint(params: dict) -> str:
    """A short hash of the parameters and the renderer version."""
    h = hashlib.sha1(RENDER_VERSION.encode())
    for k in PARAM_NAMES:
        h.update(k.encode())
        h.update(np.ascontiguousarray(params[k]).tobytes())
    return h.hexdigest()[:16]


class GarmentImages(ImageSource):
    """An ImageSource of procedural garments: draws at whatever resolution is asked.

    ``load(i)`` returns a ``DEFAULT_RESOLUTION`` (256) px image; ``render`` draws
    a batch directly at the requested size (no resampling).
    """

    def __init__(self, params: dict):
        self.params = params
        self._n = check_params(params)
        self.fingerprint = params_fingerprint(params)

    def __len__(self) -> int:
        return self._n

    def load(self, index: int) -> np.ndarray:
        return render_garments(self.params, [index], DEFAULT_RESOLUTION)[0]

    def describe(self, index: int) -> str:
        if not 0 <= index < self._n:
            return f"garment #{index} (out of range)"
        return f"garment #{index} ({CATEGORIES[int(self.params['category'][index])]})"

    def render(self, indices: np.ndarray, resolution: int) -> np.ndarray:
        return render_garments(self.params, indices, resolution)

    @property
    def categories(self) -> np.ndarray:
        """int32 [n]: category index of each garment."""
        return np.asarray(self.params["category"], dtype=np.int32)
