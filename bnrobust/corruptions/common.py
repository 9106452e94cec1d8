"""The machinery every corruption shares: the registries (SUITES, SEVERITIES, ...), the wrapper
that validates, converts to [0, 1] and quantizes back like the released files, the image helpers
both suites reuse (blurs, warps, plasma fractal, HSV, ImageMagick's motion blur), and `corrupt`,
the one entry point, which seeds each chunk from its arguments so results are reproducible.

Kept in one module so that mnist_c.py and cifar10_c.py hold only the published constants and
the per-corruption recipes (see the package docstring for sources and deviations)."""
from __future__ import annotations

import functools
import zlib
from typing import Callable, Sequence

import numpy as np
from scipy import ndimage

from ..errors import BnrobustError
from ..registry import Registry

Corruption = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]

MNIST_C = Registry("MNIST-C corruption")
CIFAR10_C = Registry("CIFAR-10-C corruption")
SUITES: dict[str, Registry] = {"mnist": MNIST_C, "cifar10": CIFAR10_C}
SEVERITIES: dict[str, tuple[int, ...]] = {"mnist": (1,), "cifar10": (1, 2, 3, 4, 5)}
_SHAPES = {"mnist": (28, 28), "cifar10": (32, 32, 3)}
_QUANTIZE = {"mnist": "round", "cifar10": "trunc"}

# Corruptions whose output does not depend on the random generator.
DETERMINISTIC: dict[str, frozenset[str]] = {
    "mnist": frozenset({"scale", "brightness", "stripe", "canny_edges"}),
    "cifar10": frozenset({"defocus_blur", "zoom_blur", "brightness", "contrast", "pixelate",
                          "jpeg_compression", "gaussian_blur", "saturate"}),
}
# What the originals do that we cannot (the package docstring lists every deviation).
NOT_IMPLEMENTED: dict[str, str] = {
    "cifar10/frost": "the original frost photographs are not shipped: the default frost uses a "
                     "procedural ice texture (an approximation); make_frost(load_frost_textures(dir)) "
                     "uses the original frost1..5 files from hendrycks/robustness if you have them",
}


def _wrap(suite: str, fn: Callable) -> Corruption:
    """Turn `fn(x01, severity, rng) -> y01` (float64 in [0, 1]) into a corruption with the uniform
    signature (images, severity, rng) that validates, keeps dtype and shape, and quantizes."""
    @functools.wraps(fn)
    def wrapper(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
        _check_severity(suite, severity)
        x, restore = _to_unit(images, suite)
        return restore(fn(x, severity, rng))
    return wrapper


def _corruption(suite: str, name: str):
    """Decorator: wrap and register under SUITES[suite][name]."""
    def deco(fn):
        wrapper = _wrap(suite, fn)
        return SUITES[suite].register(name)(wrapper)
    return deco


def _check_severity(suite: str, severity) -> None:
    if not isinstance(severity, (int, np.integer)) or int(severity) not in SEVERITIES[suite]:
        levels = SEVERITIES[suite]
        if len(levels) == 1:
            raise BnrobustError(f"{suite} corruptions have a single severity, 1; got {severity!r}")
        raise BnrobustError(f"severity for {suite} corruptions must be an integer in "
                            f"{levels[0]}..{levels[-1]}, got {severity!r}")


def _to_unit(images: np.ndarray, suite: str):
    """Validate a batch, return it as float64 in [0, 1] and a function that maps a result back."""
    if not isinstance(images, np.ndarray):
        raise BnrobustError(f"images must be a numpy array, got {type(images).__name__}")
    shape, dtype = images.shape, images.dtype
    want = _SHAPES[suite]
    arr = images
    if suite == "mnist" and arr.ndim == 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != len(want) + 1 or arr.shape[1:] != want:
        raise BnrobustError(f"{suite} corruptions need images of shape [N, {', '.join(map(str, want))}], "
                            f"got {list(shape)}")
    if dtype == np.uint8:
        x = arr.astype(np.float64) / 255.0
    elif np.issubdtype(dtype, np.floating):
        if arr.size and not (np.isfinite(arr).all() and arr.min() >= 0 and arr.max() <= 255):
            raise BnrobustError("float images must hold finite values in [0, 255]")
        x = arr.astype(np.float64) / 255.0
    else:
        raise BnrobustError(f"images must be uint8 or float in [0, 255], got dtype {dtype}")

    def restore(y01: np.ndarray) -> np.ndarray:
        y = np.clip(y01 * 255.0, 0.0, 255.0)
        if dtype == np.uint8:
            y = np.rint(y) if _QUANTIZE[suite] == "round" else np.floor(y + 1e-6)
        return np.minimum(y, 255.0).astype(dtype).reshape(shape)
    return x, restore


# ---------------------------------------------------------------------------
# Shared helpers


def _gaussian(x: np.ndarray, sigma: Sequence[float], mode: str = "nearest", truncate: float = 4.0):
    """skimage.filters.gaussian (scipy's gaussian_filter underneath) with per-axis sigma."""
    return ndimage.gaussian_filter(x, sigma=list(sigma), mode=mode, truncate=truncate)


def _to_u8(x01: np.ndarray) -> np.ndarray:
    """A [0,1] float batch as the uint8 image the original handed to PIL / cv2."""
    return np.rint(np.clip(x01, 0, 1) * 255).astype(np.uint8)


def _salt_and_pepper(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """skimage.util.random_noise(mode='s&p'): each value, with prob. `amount`, becomes 0 or 1."""
    flipped = rng.random(x.shape) < amount
    salted = rng.random(x.shape) < 0.5
    out = x.copy()
    out[flipped & salted] = 1.0
    out[flipped & ~salted] = 0.0
    return out


def _glass_shuffle(x: np.ndarray, delta: int, iterations: int, rng: np.random.Generator,
                   swap_prob: float | None, copy_only: bool) -> np.ndarray:
    """The originals' local pixel shuffle, run on the whole batch at once (each position is still
    visited in the original's order, since later swaps read earlier results)."""
    n, size = x.shape[0], x.shape[1]
    everyone = np.arange(n)
    for _ in range(iterations):
        for h in range(size - delta, delta, -1):
            for w in range(size - delta, delta, -1):
                idx = everyone if swap_prob is None else everyone[rng.random(n) < swap_prob]
                d = rng.integers(-delta, delta, size=(len(idx), 2))  # randint: high exclusive
                h2, w2 = h + d[:, 1], w + d[:, 0]
                other = x[idx, h2, w2].copy()
                if not copy_only:
                    x[idx, h2, w2] = x[idx, h, w]
                x[idx, h, w] = other
    return x


def _motion_kernel(radius: float, sigma: float) -> np.ndarray:
    """ImageMagick's motion-blur weights: a one-sided Gaussian over 2*ceil(radius)+1 taps."""
    width = int(2 * np.ceil(radius) + 1)
    i = np.arange(width, dtype=np.float64)
    k = np.exp(-(i ** 2) / (2 * sigma ** 2))
    return k / k.sum()


def _motion_blur(x: np.ndarray, radius: float, sigma: float, angles_deg: np.ndarray) -> np.ndarray:
    """ImageMagick MotionBlurImage on a batch, one angle per image: out(y, x) = sum_i k_i *
    in(y + round(i sin a), x + round(i cos a)) with edge clamping, then ImageMagick Q16's
    quantization and its 8-bit PNG output (q = round(65535 v), floor(q / 257)): the original
    round-trips through PNG. Identical to ImageMagick 6.9.11's `convert -motion-blur` on every
    pixel we compared (MNIST and colour images, several angles)."""
    k = _motion_kernel(radius, sigma)
    n, h, w = x.shape[:3]
    a = np.deg2rad(angles_deg)[:, None]
    i = np.arange(len(k))[None, :]
    ox = np.ceil(i * np.cos(a) - 0.5).astype(int)  # ceil(v - 0.5) as in ImageMagick
    oy = np.ceil(i * np.sin(a) - 0.5).astype(int)
    rows, cols = np.arange(h)[None, :, None], np.arange(w)[None, None, :]
    nn = np.arange(n)[:, None, None]
    out = np.zeros_like(x)
    for j, kj in enumerate(k):
        r = np.clip(rows + oy[:, j, None, None], 0, h - 1)
        c = np.clip(cols + ox[:, j, None, None], 0, w - 1)
        out += kj * x[nn, r, c]
    q16 = np.floor(np.clip(out, 0, 1) * 65535 + 0.5).astype(np.int64)
    return (q16 // 257) / 255.0


def _sample_bilinear(img: np.ndarray, ys: np.ndarray, xs: np.ndarray, mode: str) -> np.ndarray:
    """Bilinear samples of a batch [N, H, W(, C)] at per-image coordinates ys, xs [N, H', W'].

    mode: 'constant' (zero outside, interpolating toward it, as skimage.transform.warp),
    'mirror' (reflect-101, cv2 BORDER_REFLECT_101) or 'reflect' (half-sample symmetric)."""
    n, h, w = img.shape[:3]
    y0, x0 = np.floor(ys), np.floor(xs)
    dy, dx = ys - y0, xs - x0
    y0, x0 = y0.astype(np.int64), x0.astype(np.int64)
    nn = np.arange(n).reshape((n,) + (1,) * (ys.ndim - 1))
    extra = (None,) * (img.ndim - 3)

    def fetch(yy, xx):
        if mode == "constant":
            inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            v = img[nn, np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)]
            return v * inside[(...,) + extra]
        return img[nn, _fold(yy, h, mode), _fold(xx, w, mode)]

    wy, wx = dy[(...,) + extra], dx[(...,) + extra]
    top = fetch(y0, x0) * (1 - wx) + fetch(y0, x0 + 1) * wx
    bottom = fetch(y0 + 1, x0) * (1 - wx) + fetch(y0 + 1, x0 + 1) * wx
    return top * (1 - wy) + bottom * wy


def _fold(i: np.ndarray, n: int, mode: str) -> np.ndarray:
    """Map out-of-range pixel indices back inside by reflection."""
    if n == 1:
        return np.zeros_like(i)
    if mode == "mirror":  # ... c b | a b c d | c b ...
        period = 2 * n - 2
        i = np.mod(i, period)
        return np.where(i >= n, period - i, i)
    period = 2 * n  # reflect: ... b a | a b c d | d c ...
    i = np.mod(i, period)
    return np.where(i >= n, period - 1 - i, i)


def _affine_warp(img: np.ndarray, mats: np.ndarray, mode: str = "constant") -> np.ndarray:
    """Warp each image by the 2x3 matrix mapping OUTPUT (x=col, y=row) to INPUT coordinates
    (skimage.transform.warp's inverse_map convention), bilinear."""
    h, w = img.shape[1:3]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    xs = mats[:, 0, 0, None, None] * xx + mats[:, 0, 1, None, None] * yy + mats[:, 0, 2, None, None]
    ys = mats[:, 1, 0, None, None] * xx + mats[:, 1, 1, None, None] * yy + mats[:, 1, 2, None, None]
    return _sample_bilinear(img, ys, xs, mode)


def _centered(lin: np.ndarray, center: float) -> np.ndarray:
    """2x2 linear parts [N,2,2] -> 2x3 matrices that keep (center, center) fixed (as MNIST-C does)."""
    t = center * (1 - lin[:, :, 0] - lin[:, :, 1])
    return np.concatenate([lin, t[:, :, None]], axis=2)


def _plasma(n: int, mapsize: int, decay: float, rng: np.random.Generator, crop: int | None = None) -> np.ndarray:
    """Diamond-square height maps in [0, 1] (the originals' plasma_fractal), `n` at once.
    float32, in chunks of ~4 MB: MNIST-C needs a full 256x256 map per image (only a 28x28 crop is
    used, but the map is normalized by its global min and max); `crop` keeps only [:crop, :crop]."""
    crop = mapsize if crop is None else crop
    out = np.empty((n, crop, crop), np.float32)
    chunk = max(1, (1 << 20) // (mapsize * mapsize))
    for s in range(0, n, chunk):
        out[s:s + chunk] = _plasma_batch(min(chunk, n - s), mapsize, decay, rng)[:, :crop, :crop]
    return out


def _plasma_batch(n: int, mapsize: int, decay: float, rng: np.random.Generator) -> np.ndarray:
    f32 = np.float32
    m = np.zeros((n, mapsize, mapsize), f32)
    step, wibble = mapsize, 100.0

    def wibbled_mean(a):  # a / 4 + wibble * U(-wibble, wibble)
        r = rng.random(a.shape, dtype=f32)
        r *= f32(2 * wibble * wibble)
        r -= f32(wibble * wibble)
        r += a / 4
        return r

    while step >= 2:
        half = step // 2
        corners = m[:, 0::step, 0::step]  # squares: centre = mean of 4 corners + noise
        acc = corners + np.roll(corners, -1, axis=1)
        acc = acc + np.roll(acc, -1, axis=2)
        m[:, half::step, half::step] = wibbled_mean(acc)
        dr = m[:, half::step, half::step]  # diamonds: edge midpoints from 2 centres + 2 corners
        ul = m[:, 0::step, 0::step]
        m[:, 0::step, half::step] = wibbled_mean(dr + np.roll(dr, 1, axis=1) + ul + np.roll(ul, -1, axis=2))
        m[:, half::step, 0::step] = wibbled_mean(dr + np.roll(dr, 1, axis=2) + ul + np.roll(ul, -1, axis=1))
        step //= 2
        wibble /= decay
    m -= m.min(axis=(1, 2), keepdims=True)
    return m / m.max(axis=(1, 2), keepdims=True)


def _clipped_zoom(x: np.ndarray, z: float) -> np.ndarray:
    """Zoom the centre of each image by z (scipy zoom, order 1) and crop back to size."""
    h = x.shape[1]
    ch = int(np.ceil(h / z))
    top = (h - ch) // 2
    factors = (1, z, z) + (1,) * (x.ndim - 3)
    y = ndimage.zoom(x[:, top:top + ch, top:top + ch], factors, order=1)
    trim = (y.shape[1] - h) // 2
    return y[:, trim:trim + h, trim:trim + h]


def _zoom_matrix(size: int, z: float) -> np.ndarray:
    """The rows of _clipped_zoom as a [size, size] matrix: output row a = sum_i W[a, i] input row i
    (scipy zoom order 1, grid_mode False: input coordinate o (in - 1) / (out - 1))."""
    ch = int(np.ceil(size / z))
    top = (size - ch) // 2
    n_out = int(round(ch * z))
    ratio = (ch - 1) / (n_out - 1) if n_out > 1 else 0.0
    trim = (n_out - size) // 2
    c = np.clip(np.arange(trim, trim + size) * ratio, 0, ch - 1)
    i0 = np.floor(c).astype(int)
    w = c - i0
    mat = np.zeros((size, size))
    rows = np.arange(size)
    np.add.at(mat, (rows, top + i0), 1 - w)
    np.add.at(mat, (rows, top + np.minimum(i0 + 1, ch - 1)), w)
    return mat


def _rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """skimage.color.rgb2hsv, vectorized over any leading axes."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    v = rgb.max(-1)
    delta = v - rgb.min(-1)
    safe = np.where(delta == 0, 1, delta)
    s = np.where(delta == 0, 0, delta / np.where(v == 0, 1, v))
    h = np.where(r == v, (g - b) / safe, np.where(g == v, 2 + (b - r) / safe, 4 + (r - g) / safe))
    h = np.where(delta == 0, 0, (h / 6) % 1)
    return np.stack([h, s, v], -1)


def _hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """skimage.color.hsv2rgb, vectorized."""
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    hi = np.floor(h * 6)
    f = h * 6 - hi
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    hi = hi.astype(int) % 6
    sel = [hi == k for k in range(6)]
    r = np.select(sel, [v, q, p, p, t, v])
    g = np.select(sel, [t, v, v, q, p, p])
    b = np.select(sel, [p, p, t, v, v, q])
    return np.stack([r, g, b], -1)


def _lighten(rgb: np.ndarray, c: float) -> np.ndarray:
    """HSV brightness: V' = clip(V + c, 0, 1) with H, S kept. Every RGB channel is linear in V at
    fixed H and S, so this is rgb * V'/V (and grey V' where V = 0) - no HSV round trip needed."""
    v = rgb.max(-1, keepdims=True)
    v2 = np.clip(v + c, 0, 1)
    return np.where(v > 0, rgb * (v2 / np.where(v > 0, v, 1)), v2)


def _pil_map(x01: np.ndarray, fn: Callable) -> np.ndarray:
    """Apply a PIL.Image -> PIL.Image function to each image of a batch (uint8 in between)."""
    from PIL import Image
    u8 = _to_u8(x01)
    return np.stack([np.asarray(fn(Image.fromarray(im))) for im in u8]).astype(np.float64) / 255


# ---------------------------------------------------------------------------
# Entry point


def corruption_names(suite: str) -> list[str]:
    """The corruptions of a suite, in registry order."""
    return list(_suite(suite))


def _suite(suite: str) -> Registry:
    if suite not in SUITES:
        raise BnrobustError(f"unknown corruption suite {suite!r}; choose from {', '.join(SUITES)}")
    return SUITES[suite]


def _chunk_rng(seed: int, suite: str, name: str, severity: int, chunk: int) -> np.random.Generator:
    words = [seed, list(SUITES).index(suite), zlib.crc32(name.encode()), severity, chunk]
    return np.random.default_rng(np.random.SeedSequence(words))


def corrupt(images: np.ndarray, name: str, severity: int = 1, seed: int = 0, suite: str = "mnist",
            batch_size: int = 1000) -> np.ndarray:
    """Corrupt a batch with one named corruption of `suite` ("mnist" or "cifar10").

    Images are processed in chunks of `batch_size` (bounded memory); each chunk gets its own
    generator seeded from (seed, suite, name, severity, chunk index), so the result is a pure
    function of these and of the images, and a prefix of the batch corrupts the same way."""
    fn = _suite(suite).get(name)  # an unknown name is a one-line error with close matches
    _check_severity(suite, severity)
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise BnrobustError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise BnrobustError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not isinstance(images, np.ndarray) or images.ndim < 1:
        raise BnrobustError("images must be a numpy array of images")
    if len(images) == 0:
        _to_unit(images, suite)  # validates the shape
        return images.copy()
    parts = [fn(images[s:s + batch_size], int(severity),
                _chunk_rng(int(seed), suite, name, int(severity), s // batch_size))
             for s in range(0, len(images), batch_size)]
    return np.concatenate(parts)
