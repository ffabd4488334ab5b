"""Vectorised procedural drawing for the embedded "tdam-shapes" datasets.

Everything here works on a *batch* of images at once: a float32 canvas ``(n, S, S, 3)`` in [0, 1] and per-image
parameter vectors of length ``n``; masks are computed by broadcasting against one pixel-centre grid, so there is no
Python loop over pixels or images (only over the few drawing layers / shape kinds).

Objects are drawn in object-local coordinates ``(u, v)`` (unit = object radius, rotated and optionally mirrored), so
textures and parts rotate with the object. Each ``draw_*`` function returns the exact bounding box of what it drew,
``xyxy`` in *inclusive* pixel indices (first and last covered column/row, the ILSVRC convention), clipped to each
image's own ``(W, H)``.
"""
from __future__ import annotations

import numpy as np

from tdam.validation import check_choice

__all__ = [
    "CANVAS", "SHAPES", "TEXTURES", "COLOUR_FAMILIES", "hsv_to_rgb", "render_background", "draw_shapes",
    "draw_birds", "draw_dogs", "to_uint8",
]

CANVAS = 96  #: every image is rendered on a CANVAS x CANVAS canvas, then cropped to its own (W, H) <= CANVAS
SHAPES = ("disk", "square", "triangle", "diamond", "cross", "ring")
TEXTURES = ("solid", "stripes", "checker", "dots")
COLOUR_FAMILIES = {"red": 0.0, "yellow": 0.14, "green": 0.33, "blue": 0.62}  # hue centres

_YY, _XX = np.mgrid[0:CANVAS, 0:CANVAS].astype(np.float32) + np.float32(0.5)  # pixel centres


def _col(a: np.ndarray) -> np.ndarray:
    """(n,) -> (n, 1, 1) for broadcasting against the (S, S) grid."""
    return np.asarray(a, dtype=np.float32)[:, None, None]


def hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB; inputs (n,), hue wraps around 1; returns (n, 3) float32."""
    h = (np.asarray(h, np.float32) % 1.0) * 6.0
    s = np.asarray(s, np.float32)
    v = np.asarray(v, np.float32)
    i = np.floor(h).astype(np.int64) % 6
    f = h - np.floor(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    r = np.choose(i, [v, q, p, p, t, v])
    g = np.choose(i, [t, v, v, q, p, p])
    b = np.choose(i, [p, p, t, v, v, q])
    return np.stack([r, g, b], axis=-1).astype(np.float32)


def _local(cx, cy, r, theta, flip=None):
    """Object-local coordinates (u, v) of every pixel, each (n, S, S); unit length = r."""
    dx = (_XX[None] - _col(cx)) / _col(r)
    dy = (_YY[None] - _col(cy)) / _col(r)
    c, s = _col(np.cos(theta)), _col(np.sin(theta))
    u = c * dx + s * dy
    v = -s * dx + c * dy
    if flip is not None:
        u = u * _col(np.where(flip, -1.0, 1.0))
    return u, v


def _inside_image(W: np.ndarray, H: np.ndarray) -> np.ndarray:
    return (_XX[None] < _col(W)) & (_YY[None] < _col(H))


def _boxes(mask: np.ndarray) -> np.ndarray:
    """Inclusive xyxy extent of each mask (n, S, S) -> (n, 4) int; an empty mask gives (-1, -1, -1, -1)."""
    cols, rows = mask.any(axis=1), mask.any(axis=2)
    S = mask.shape[-1]
    x0, x1 = cols.argmax(1), S - 1 - cols[:, ::-1].argmax(1)
    y0, y1 = rows.argmax(1), S - 1 - rows[:, ::-1].argmax(1)
    out = np.stack([x0, y0, x1, y1], axis=1).astype(np.int64)
    out[~cols.any(1)] = -1
    return out


def _paint(canvas: np.ndarray, idx: np.ndarray | None, mask: np.ndarray, colour: np.ndarray) -> None:
    """In place: canvas[idx] = colour where mask; colour is (k, 3) or (k, S, S, 3); idx None = all images."""
    if colour.ndim == 2:
        colour = colour[:, None, None, :]
    if idx is None or (len(idx) == len(canvas) and np.array_equal(idx, np.arange(len(canvas)))):
        np.copyto(canvas, colour, where=mask[..., None])
    else:
        sub = canvas[idx]
        np.copyto(sub, colour, where=mask[..., None])
        canvas[idx] = sub


def to_uint8(canvas: np.ndarray) -> np.ndarray:
    return (np.clip(canvas, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------- background
def render_background(rng: np.random.Generator, n: int, *, clutter: int = 10, value_scale: float = 1.0) -> np.ndarray:
    """Cluttered backgrounds: a two-colour gradient, low-frequency colour noise and ``clutter`` small random
    primitives (super-ellipses from diamond to rectangle, some elongated like strokes) in arbitrary hues, so the
    object colours also occur in the clutter. Returns the canvas (n, S, S, 3) float32."""
    S = CANVAS
    ca = hsv_to_rgb(rng.random(n), rng.uniform(0.05, 0.45, n), rng.uniform(0.35, 0.9, n) * value_scale)
    cb = hsv_to_rgb(rng.random(n), rng.uniform(0.05, 0.45, n), rng.uniform(0.35, 0.9, n) * value_scale)
    ang = rng.uniform(0, 2 * np.pi, n)
    t = (_XX[None] - S / 2) * _col(np.cos(ang)) + (_YY[None] - S / 2) * _col(np.sin(ang))
    t = np.clip(t / S + 0.5, 0.0, 1.0)[..., None]
    canvas = ca[:, None, None, :] * (1 - t) + cb[:, None, None, :] * t
    # low-frequency noise: (n, 5, 5, 3) upsampled by separable linear interpolation matrices
    g = 5
    coarse = rng.normal(0.0, 0.07, (n, g, g, 3)).astype(np.float32)
    pos = (np.arange(S, dtype=np.float32) + 0.5) / S * (g - 1)
    interp = np.maximum(0.0, 1.0 - np.abs(pos[:, None] - np.arange(g, dtype=np.float32)[None])).astype(np.float32)
    canvas += np.einsum("yi,xj,nijc->nyxc", interp, interp, coarse, optimize=True)
    # clutter primitives, one vectorised layer per slot, each painted inside a small window around its centre
    # (a padded canvas keeps windows at the border in range; the padding is cropped off at the end)
    P = 10
    padded = np.zeros((n, S + 2 * P, S + 2 * P, 3), np.float32)
    padded[:, P:P + S, P:P + S] = canvas
    count = rng.integers(max(clutter - 4, 0), clutter + 5, n)
    win = np.arange(2 * P)
    rows_n = np.arange(n)[:, None, None]
    for k in range(clutter + 4):
        cx, cy = rng.uniform(0, S, n), rng.uniform(0, S, n)
        x0, y0 = np.floor(cx).astype(np.int64), np.floor(cy).astype(np.int64)  # window origin in padded coords
        gx = (x0[:, None] + win[None]).astype(np.float32) - P + 0.5  # pixel-centre x in image coords, (n, 2P)
        gy = (y0[:, None] + win[None]).astype(np.float32) - P + 0.5
        rad = rng.uniform(2.0, 7.0, n)
        dx = (gx[:, None, :] - cx[:, None, None].astype(np.float32)) / _col(rad)
        dy = (gy[:, :, None] - cy[:, None, None].astype(np.float32)) / _col(rad)
        th = rng.uniform(0, np.pi, n)
        c, s_ = _col(np.cos(th)), _col(np.sin(th))
        u, v = c * dx + s_ * dy, -s_ * dx + c * dy
        p = _col(rng.choice(np.array([1.0, 2.0, 6.0], np.float32), n))
        aspect = _col(rng.choice(np.array([1.0, 1.0, 0.25], np.float32), n))
        mask = (np.abs(u) ** p + np.abs(v / aspect) ** p <= 1.0) & _col(count > k).astype(bool)
        colour = hsv_to_rgb(rng.random(n), rng.uniform(0.1, 0.8, n), rng.uniform(0.25, 0.95, n) * value_scale)
        ri, ci = y0[:, None, None] + win[None, :, None], x0[:, None, None] + win[None, None, :]
        patch = padded[rows_n, ri, ci]
        np.copyto(patch, colour[:, None, None, :], where=mask[..., None])
        padded[rows_n, ri, ci] = patch
    canvas = np.ascontiguousarray(padded[:, P:P + S, P:P + S])
    return canvas


# ----------------------------------------------------------------------------------------------------- shapes
def _shape_mask(kind: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    check_choice("shape", kind, SHAPES)
    if kind == "disk":
        return u * u + v * v <= 1.0
    if kind == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.8
    if kind == "triangle":  # equilateral, circumradius 1
        m = v <= 0.5
        for a in (np.pi * 7 / 6, np.pi * 11 / 6):
            m &= u * np.cos(a) + v * np.sin(a) <= 0.5
        return m
    if kind == "diamond":
        return np.abs(u) + np.abs(v) <= 1.0
    if kind == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= 0.3) & (av <= 0.95)) | ((av <= 0.3) & (au <= 0.95))
    d = u * u + v * v  # ring
    return (d <= 1.0) & (d >= 0.5 * 0.5)


def _texture(kind: str, u: np.ndarray, v: np.ndarray, freq: np.ndarray) -> np.ndarray:
    """Boolean (n, S, S): True where the second (dark) texture colour is used."""
    check_choice("texture", kind, TEXTURES)
    f = _col(freq)
    if kind == "solid":
        return np.zeros(u.shape, dtype=bool)
    if kind == "stripes":
        return (np.floor(u * f) % 2) == 0
    if kind == "checker":
        return ((np.floor(u * f) + np.floor(v * f)) % 2) == 0
    fu, fv = u * f - np.floor(u * f) - 0.5, v * f - np.floor(v * f) - 0.5  # dots
    return fu * fu + fv * fv < 0.09


def draw_shapes(canvas: np.ndarray, idx: np.ndarray, shape: np.ndarray, texture: np.ndarray, colour: np.ndarray,
                cx: np.ndarray, cy: np.ndarray, r: np.ndarray, theta: np.ndarray, W: np.ndarray, H: np.ndarray,
                freq: np.ndarray) -> np.ndarray:
    """Draw one textured shape into each image ``canvas[idx[j]]`` (shape/texture are indices into SHAPES/TEXTURES,
    colour (k, 3) the main colour; the texture's second colour is a darker shade). Returns boxes (k, 4)."""
    boxes = np.full((len(idx), 4), -1, dtype=np.int64)
    dark = colour * 0.35 + 0.03
    for s_i, s_name in enumerate(SHAPES):
        for t_i, t_name in enumerate(TEXTURES):
            sel = np.nonzero((shape == s_i) & (texture == t_i))[0]
            if len(sel) == 0:
                continue
            u, v = _local(cx[sel], cy[sel], r[sel], theta[sel])
            mask = _shape_mask(s_name, u, v) & _inside_image(W[sel], H[sel])
            tex = _texture(t_name, u, v, freq[sel])
            shade = (1.0 - 0.18 * np.clip(v + 1.0, 0.0, 2.0))[..., None]  # soft top-lit shading
            col = np.where(tex[..., None], dark[sel][:, None, None, :], colour[sel][:, None, None, :]) * shade
            _paint(canvas, idx[sel], mask, col)
            boxes[sel] = _boxes(mask)
    return boxes


# ----------------------------------------------------------------------------------------------------- creatures
def _ell(u, v, cu, cv, au, av):
    du, dv = (u - cu) / au, (v - cv) / av
    return du * du + dv * dv <= 1.0


def _rect(u, v, u0, u1, v0, v1):
    return (u >= u0) & (u <= u1) & (v >= v0) & (v <= v1)


def draw_birds(canvas: np.ndarray, idx: np.ndarray, cap_colour: np.ndarray, wing_bar: np.ndarray,
               body_colour: np.ndarray, cx, cy, r, theta, flip, W, H) -> np.ndarray:
    """CUB-style fine-grained "birds": an ellipse body, tail, head, beak and eye in a body colour shared by all
    classes; the class is carried by two SMALL details: the colour of the crown cap and whether the wing has a pale
    bar. Returns boxes (k, 4)."""
    u, v = _local(cx, cy, r, theta, flip)
    inside = _inside_image(W, H)
    body = _ell(u, v, 0.0, 0.0, 1.0, 0.55)
    tail = (u >= -1.55) & (u <= -0.8) & (np.abs(v + 0.1) <= 0.08 + 0.4 * (-0.8 - u))
    head = _ell(u, v, 0.95, -0.45, 0.38, 0.38)
    beak = (u >= 1.28) & (u <= 1.6) & (np.abs(v + 0.42) <= 0.1 * (1.6 - u) / 0.32)
    cap = head & (v <= -0.58)
    eye = _ell(u, v, 1.08, -0.5, 0.08, 0.08)
    wing = _ell(u, v, -0.1, -0.05, 0.6, 0.28)
    bar = wing & (np.abs(u + 0.1 + 0.3 * v) <= 0.12) & _col(wing_bar).astype(bool)
    dark_body = body_colour * 0.6
    _paint(canvas, idx, tail & inside, dark_body)
    _paint(canvas, idx, (body | head) & inside, body_colour)
    _paint(canvas, idx, wing & inside, dark_body)
    _paint(canvas, idx, bar & inside, np.full_like(body_colour, 0.95))
    _paint(canvas, idx, beak & inside, np.tile(np.array([[0.95, 0.6, 0.1]], np.float32), (len(idx), 1)))
    _paint(canvas, idx, cap & inside, cap_colour)
    _paint(canvas, idx, eye & inside, np.zeros_like(body_colour))
    return _boxes((body | tail | head | beak) & inside)


def draw_dogs(canvas: np.ndarray, idx: np.ndarray, pointy_ears: np.ndarray, curly_tail: np.ndarray,
              spots: np.ndarray, coat: np.ndarray, cx, cy, r, theta, flip, W, H) -> np.ndarray:
    """Stanford-Dogs-style fine-grained "dogs": body, four legs, head and snout in a coat colour shared by all
    classes; the breed is carried by small details: pointed vs floppy ears, straight vs curly tail, spotted coat or
    not. Returns boxes (k, 4)."""
    u, v = _local(cx, cy, r, theta, flip)
    inside = _inside_image(W, H)
    body = np.abs(u / 0.95) ** 4 + np.abs(v / 0.42) ** 4 <= 1.0
    legs = np.zeros_like(body)
    for lu in (-0.7, -0.42, 0.42, 0.7):
        legs |= _rect(u, v, lu - 0.09, lu + 0.09, 0.2, 0.95)
    head = _ell(u, v, 1.05, -0.45, 0.36, 0.36)
    snout = _ell(u, v, 1.4, -0.35, 0.2, 0.13)
    pe, ct = _col(pointy_ears).astype(bool), _col(curly_tail).astype(bool)
    ear_p = (v <= -0.65) & (v >= -1.12) & (np.abs(u - 0.98) <= 0.16 * (v + 1.12) / 0.47)
    ear_f = _ell(u, v, 0.82, -0.35, 0.11, 0.3)
    ears = np.where(pe, ear_p, ear_f)
    tail_s = _rect(u, v, -1.12, -0.94, -0.85, -0.1)
    dt = (u + 1.12) ** 2 + (v + 0.5) ** 2
    tail_c = (dt <= 0.28 ** 2) & (dt >= 0.14 ** 2)
    tail = np.where(ct, tail_c, tail_s)
    fu, fv = u * 3.0 - np.floor(u * 3.0) - 0.5, v * 3.0 - np.floor(v * 3.0) - 0.5
    spot = body & (fu * fu + fv * fv < 0.06) & _col(spots).astype(bool)
    eye = _ell(u, v, 1.12, -0.55, 0.07, 0.07)
    dark = coat * 0.45
    _paint(canvas, idx, (tail | legs) & inside, coat * 0.8)
    _paint(canvas, idx, (body | head) & inside, coat)
    _paint(canvas, idx, snout & inside, coat * 0.75)
    _paint(canvas, idx, spot & inside, dark)
    _paint(canvas, idx, ears & inside, dark)
    _paint(canvas, idx, eye & inside, np.zeros_like(coat))
    return _boxes((body | legs | head | snout | ears | tail) & inside)
