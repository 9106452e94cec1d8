"""CIFAR-10-C (Hendrycks & Dietterich, 2019): 15 corruptions + 4 extras at severities 1..5,
registered in CIFAR10_C by importing this module; also the frost textures (procedural, or the
original photographs via load_frost_textures / make_frost)."""
from __future__ import annotations

import functools
import io
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage

from ..errors import BnrobustError
from .common import (Corruption, _affine_warp, _clipped_zoom, _corruption, _gaussian, _glass_shuffle,
                     _hsv_to_rgb, _lighten, _motion_blur, _pil_map, _plasma, _rgb_to_hsv, _salt_and_pepper,
                     _sample_bilinear, _wrap, _zoom_matrix)
from .cvops import _chamfer_distance, _cv_canny, _equalize_hist

# CIFAR-10-C. Constants: hendrycks/robustness, ImageNet-C/create_c/make_cifar_c.py.


@_corruption("cifar10", "gaussian_noise")
def cifar_gaussian_noise(x, severity, rng):
    """Additive Gaussian noise, std [.04, .06, .08, .09, .10] in [0, 1] units."""
    c = [0.04, 0.06, 0.08, 0.09, 0.10][severity - 1]
    return np.clip(x + rng.normal(0, c, x.shape), 0, 1)


@_corruption("cifar10", "shot_noise")
def cifar_shot_noise(x, severity, rng):
    """Poisson(c x) / c with c in [500, 250, 100, 75, 50] photons."""
    c = [500, 250, 100, 75, 50][severity - 1]
    return np.clip(rng.poisson(x * c) / c, 0, 1)


@_corruption("cifar10", "impulse_noise")
def cifar_impulse_noise(x, severity, rng):
    """Salt and pepper per channel value, amount [.01, .02, .03, .05, .07]."""
    c = [0.01, 0.02, 0.03, 0.05, 0.07][severity - 1]
    return _salt_and_pepper(x, c, rng)


@_corruption("cifar10", "speckle_noise")
def cifar_speckle_noise(x, severity, rng):
    """Multiplicative noise x + x N(0, c^2), c in [.06, .1, .12, .16, .2]."""
    c = [0.06, 0.1, 0.12, 0.16, 0.2][severity - 1]
    return np.clip(x + x * rng.normal(0, c, x.shape), 0, 1)


@_corruption("cifar10", "gaussian_blur")
def cifar_gaussian_blur(x, severity, rng):
    """Gaussian blur, sigma [.4, .6, .7, .8, 1] pixels."""
    c = [0.4, 0.6, 0.7, 0.8, 1][severity - 1]
    return np.clip(_gaussian(x, (0, c, c, 0)), 0, 1)


@_corruption("cifar10", "glass_blur")
def cifar_glass_blur(x, severity, rng):
    """Blur, local pixel 'shuffle', blur; (sigma, delta, iterations) from
    [(.05,1,1), (.25,1,1), (.4,1,1), (.25,1,2), (.4,1,2)]. The original's swap of two pixel views
    is really a copy (x[h,w] <- x[h',w']) with offsets in {-1, 0}; we keep that."""
    sigma, delta, iters = [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)][severity - 1]
    u8 = np.floor(np.clip(_gaussian(x, (0, sigma, sigma, 0)), 0, 1) * 255).astype(np.uint8)
    u8 = _glass_shuffle(u8, delta, iters, rng, swap_prob=None, copy_only=True)
    return np.clip(_gaussian(u8 / 255.0, (0, sigma, sigma, 0)), 0, 1)


def _defocus_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """The original disk(): a 0/1 disk on a 17x17 grid (radius <= 8), normalized, then smoothed
    by a 3x3 Gaussian (cv2.GaussianBlur, sigma = alias_blur); zero margins trimmed."""
    ax = np.arange(-8, 9)
    xx, yy = np.meshgrid(ax, ax)
    disk = ((xx ** 2 + yy ** 2) <= radius ** 2).astype(np.float64)
    disk /= disk.sum()
    g = np.exp(-np.arange(-1, 2) ** 2 / (2 * alias_blur ** 2))
    g /= g.sum()
    k = ndimage.correlate(disk, np.outer(g, g), mode="mirror")
    nz = np.argwhere(k > 0)
    lo, hi = nz.min(0), nz.max(0) + 1
    return k[lo[0]:hi[0], lo[1]:hi[1]]


@_corruption("cifar10", "defocus_blur")
def cifar_defocus_blur(x, severity, rng):
    """Disk (defocus) blur, (radius, alias_blur) from [(.3,.4), (.4,.5), (.5,.6), (1,.2), (1.5,.1)]."""
    k = _defocus_kernel(*[(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)][severity - 1])
    return np.clip(ndimage.correlate(x, k[None, :, :, None], mode="mirror"), 0, 1)


@_corruption("cifar10", "motion_blur")
def cifar_motion_blur(x, severity, rng):
    """ImageMagick motion blur (our re-implementation), (radius, sigma) from
    [(6,1), (6,1.5), (6,2), (8,2), (9,2.5)], angle ~ U(-45, 45) degrees."""
    radius, sigma = [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)][severity - 1]
    return _motion_blur(x, radius, sigma, rng.uniform(-45, 45, len(x)))


@functools.lru_cache(maxsize=5)
def _zoom_blur_operator(severity: int) -> np.ndarray:
    """Zoom blur is linear: (x + sum_z Zoom_z x) / (len(zooms) + 1) for zooms np.arange(1, 1.06..1.26,
    0.01). As one [1024, 1024] matrix on each 32x32 channel it is a single matrix product."""
    zooms = [np.arange(1, 1.06, 0.01), np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01),
             np.arange(1, 1.21, 0.01), np.arange(1, 1.26, 0.01)][severity - 1]
    op = np.eye(32 * 32)
    for z in zooms:
        w = _zoom_matrix(32, z)
        op += np.kron(w, w)
    return op / (len(zooms) + 1)


@_corruption("cifar10", "zoom_blur")
def cifar_zoom_blur(x, severity, rng):
    """Average of the image and its centre zooms by np.arange(1, 1.06..1.26, 0.01) (make_cifar_c.py)."""
    n = len(x)
    chans = x.transpose(0, 3, 1, 2).reshape(n * 3, 32 * 32)
    y = (chans @ _zoom_blur_operator(severity).T).reshape(n, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.clip(y, 0, 1)


@_corruption("cifar10", "snow")
def cifar_snow(x, severity, rng):
    """Zoomed, thresholded Gaussian flakes, motion-blurred downward, added twice (once rotated
    by 180 degrees) to a brightened image. (loc, scale, zoom, threshold, radius, sigma, blend) from
    make_cifar_c.py."""
    loc, scale, zoom, thr, radius, sigma, blend = [
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)][severity - 1]
    n = len(x)
    layer = _clipped_zoom(rng.normal(loc, scale, (n, 32, 32)), zoom)
    layer[layer < thr] = 0
    layer = np.floor(np.clip(layer, 0, 1) * 255) / 255  # the original's uint8 PIL image
    layer = _motion_blur(layer, radius, sigma, rng.uniform(-135, -45, n))[..., None]
    grey = (x @ np.array([0.299, 0.587, 0.114]))[..., None]  # cv2 RGB2GRAY
    x = blend * x + (1 - blend) * np.maximum(x, grey * 1.5 + 0.5)
    return np.clip(x + layer + np.rot90(layer, k=2, axes=(1, 2)), 0, 1)


# Frost -------------------------------------------------------------------------------------

# Mean RGB colour and mean 32x32-crop luminance std of frost1..5 (frost2 and frost3 are the same
# picture) from hendrycks/robustness ImageNet-C/create_c/, after make_cifar_c.py's 0.2x resize;
# measured by us, used only to calibrate the procedural texture.
_FROST_TINTS = np.array([(78, 149, 166), (201, 205, 214), (201, 205, 214), (138, 153, 166), (112, 123, 135)],
                        dtype=np.float64)
_FROST_CONTRAST = np.array([14.1, 17.6, 17.6, 26.3, 34.4])


def frost_texture(n: int, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """`n` procedural ice textures [n, size, size, 3] in [0, 255] (float).

    Not the original photographs. Those, after make_cifar_c.py's plain 5x subsampling, look like
    fine crystal speckle over a cloudy base; we draw many short bright needles (1-4 px, random
    angles, bilinear splats) plus pixel noise over a plasma base, normalize, and give the result
    the mean tint and 32x32-crop contrast of one of the five originals picked at random (as the
    original picks a file)."""
    k_needles, steps = 120, 8
    base = _plasma(n, size, 2.0, rng).astype(np.float64)
    cx, cy = rng.uniform(-1, size, (2, n, k_needles, 1))
    ang = rng.uniform(0, np.pi, (n, k_needles, 1))
    length = rng.uniform(1, 4, (n, k_needles, 1))
    bright = rng.uniform(0.3, 1.0, (n, k_needles, 1))
    t = np.linspace(-0.5, 0.5, steps)[None, None, :] * length
    px, py = cx + t * np.cos(ang), cy + t * np.sin(ang)
    needles = np.zeros((n, size, size))
    x0, y0 = np.floor(px).astype(int), np.floor(py).astype(int)
    fx, fy = px - x0, py - y0
    nn = np.broadcast_to(np.arange(n)[:, None, None], px.shape)
    w = bright * length / steps
    for dx, dy, wt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = x0 + dx, y0 + dy
        ok = (xi >= 0) & (xi < size) & (yi >= 0) & (yi < size)
        np.add.at(needles, (nn[ok], yi[ok], xi[ok]), (w * wt)[ok])
    lum = 0.6 * base / base.std(axis=(1, 2), keepdims=True) + needles / needles.std() \
        + 0.5 * rng.standard_normal((n, size, size))
    lum = (lum - lum.mean(axis=(1, 2), keepdims=True)) / (lum.std(axis=(1, 2), keepdims=True) + 1e-8)
    pick = rng.integers(0, 5, n)
    tex = _FROST_TINTS[pick][:, None, None, :] + _FROST_CONTRAST[pick][:, None, None, None] * lum[..., None]
    return np.clip(tex, 0, 255)


def _frost_blend(x, severity, textures):
    c0, c1 = [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)][severity - 1]
    return np.clip(c0 * x + c1 * textures / 255.0, 0, 1)


@_corruption("cifar10", "frost")
def cifar_frost(x, severity, rng):
    """clip(c0 x + c1 frost) with (c0, c1) from [(1,.2), (1,.3), (.9,.4), (.85,.4), (.75,.45)].
    DEVIATION: `frost` is a procedural texture (frost_texture), not the original photographs."""
    return _frost_blend(x, severity, frost_texture(len(x), rng))


def load_frost_textures(directory: Path) -> list[np.ndarray]:
    """The original frost1.png, frost2.png, frost3.png, frost4.jpg, frost5.jpg (hendrycks/robustness,
    ImageNet-C/create_c/) from `directory`, resized by 0.2 as make_cifar_c.py does (cv2 INTER_LINEAR
    at exactly 1/5 samples pixel 5i+2), RGB uint8."""
    from PIL import Image
    out = []
    for name in ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg"):
        path = Path(directory) / name
        try:
            a = np.asarray(Image.open(path).convert("RGB"))
        except (OSError, ValueError) as e:
            raise BnrobustError(f"cannot read frost texture {path}: {e}") from None
        h, w = int(round(a.shape[0] * 0.2)), int(round(a.shape[1] * 0.2))
        if h < 33 or w < 33:
            raise BnrobustError(f"frost texture {path} is too small ({a.shape[1]}x{a.shape[0]})")
        out.append(a[2::5, 2::5][:h, :w].copy())
    return out


def make_frost(textures: Sequence[np.ndarray]) -> Corruption:
    """A CIFAR-10-C frost corruption that crops the given textures (e.g. load_frost_textures) at
    random, as the original does, instead of using the procedural texture."""
    texs = [np.asarray(t) for t in textures]
    if not texs or any(t.ndim != 3 or t.shape[2] != 3 or min(t.shape[:2]) < 33 for t in texs):
        raise BnrobustError("frost textures must be RGB images [H, W, 3] of at least 33x33 pixels")

    def frost(x, severity, rng):
        crops = np.empty(x.shape)
        for i, pick in enumerate(rng.integers(0, len(texs), len(x))):
            t = texs[pick]
            r0, c0 = rng.integers(0, t.shape[0] - 32), rng.integers(0, t.shape[1] - 32)
            crops[i] = t[r0:r0 + 32, c0:c0 + 32]
        return _frost_blend(x, severity, crops)
    return _wrap("cifar10", frost)


@_corruption("cifar10", "fog")
def cifar_fog(x, severity, rng):
    """Add c0 x a 32x32 plasma fractal, rescale by max/(max + c0); (c0, decay) from
    [(.2,3), (.5,3), (.75,2.5), (1,2), (1.5,1.75)]."""
    c0, decay = [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)][severity - 1]
    mx = x.max(axis=(1, 2, 3), keepdims=True)
    fog = _plasma(len(x), 32, decay, rng)[..., None]
    return np.clip((x + c0 * fog) * mx / (mx + c0), 0, 1)


@_corruption("cifar10", "brightness")
def cifar_brightness(x, severity, rng):
    """HSV value + c, c in [.05, .1, .15, .2, .3]."""
    return np.clip(_lighten(x, [0.05, 0.1, 0.15, 0.2, 0.3][severity - 1]), 0, 1)


@_corruption("cifar10", "contrast")
def cifar_contrast(x, severity, rng):
    """Shrink toward each image's per-channel mean by c in [.75, .5, .4, .3, .15]."""
    c = [0.75, 0.5, 0.4, 0.3, 0.15][severity - 1]
    mean = x.mean(axis=(1, 2), keepdims=True)
    return np.clip((x - mean) * c + mean, 0, 1)


@_corruption("cifar10", "saturate")
def cifar_saturate(x, severity, rng):
    """HSV saturation s -> clip(a s + b), (a, b) in [(.3,0), (.1,0), (1.5,0), (2,.1), (2.5,.2)]."""
    a, b = [(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)][severity - 1]
    hsv = _rgb_to_hsv(x)
    hsv[..., 1] = np.clip(hsv[..., 1] * a + b, 0, 1)
    return np.clip(_hsv_to_rgb(hsv), 0, 1)


@_corruption("cifar10", "jpeg_compression")
def cifar_jpeg_compression(x, severity, rng):
    """PIL JPEG round trip at quality [80, 65, 58, 50, 40]."""
    quality = [80, 65, 58, 50, 40][severity - 1]
    from PIL import Image

    def jpeg(im):
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=quality)
        buf.seek(0)
        return Image.open(buf).convert("RGB")
    return _pil_map(x, jpeg)


@_corruption("cifar10", "pixelate")
def cifar_pixelate(x, severity, rng):
    """PIL BOX resize to int(32 c) and back, c in [.95, .9, .85, .75, .65]."""
    from PIL import Image
    small = int(32 * [0.95, 0.9, 0.85, 0.75, 0.65][severity - 1])
    return _pil_map(x, lambda im: im.resize((small, small), Image.BOX).resize((32, 32), Image.BOX))


@_corruption("cifar10", "elastic_transform")
def cifar_elastic_transform(x, severity, rng):
    """Random affine (3 points moved by U(-c2, c2) px, reflect-101 border), then a smooth random
    displacement field (U(-1,1) blurred by sigma c1, scaled by alpha c0; reflect border).
    (c0, c1, c2) = 32 x [(0,0,.08), (.05,.2,.07), (.08,.06,.06), (.1,.04,.05), (.1,.03,.03)]."""
    s = 32
    alpha, sigma, shift = (s * v for v in [(0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06),
                                           (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)][severity - 1])
    n = len(x)
    centre, half = np.float32(s // 2), s // 3  # float32(shape) // 2 and min(shape) // 3
    pts1 = np.array([[centre + half, centre + half], [centre + half, centre - half],
                     [centre - half, centre - half]], dtype=np.float64)
    pts2 = pts1[None] + rng.uniform(-shift, shift, (n, 3, 2)).astype(np.float32)
    # cv2.getAffineTransform(pts1, pts2) maps pts1 -> pts2; warpAffine samples the inverse map.
    src = np.concatenate([pts1, np.ones((3, 1))], 1)  # [3, 3]
    fwd = np.linalg.solve(src[None], pts2).transpose(0, 2, 1)  # [n, 2, 3], (x, y) convention
    lin_inv = np.linalg.inv(fwd[:, :, :2])
    inv = np.concatenate([lin_inv, -(lin_inv @ fwd[:, :, 2:])], 2)
    x = _affine_warp(x, inv, "mirror")
    if alpha > 0:
        field = rng.uniform(-1, 1, (2, n, s, s))
        dx = _gaussian(field[0], (0, sigma, sigma), mode="reflect", truncate=3) * alpha
        dy = _gaussian(field[1], (0, sigma, sigma), mode="reflect", truncate=3) * alpha
        yy, xx = np.mgrid[0:s, 0:s].astype(np.float64)
        x = _sample_bilinear(x, yy + dy, xx + dx, "reflect")
    return np.clip(x, 0, 1)


# Spatter -------------------------------------------------------------------------------------

def _water_mask(liquid: np.ndarray) -> np.ndarray:
    """make_cifar_c.py's water-drop mask from the thresholded liquid layer [N, 32, 32] (float)."""
    lu8 = np.clip(liquid * 255, 0, 255).astype(np.uint8)  # (clip added: values are < 1 in practice)
    dist = np.where(_cv_canny(lu8, 50, 150), 0, 255)
    dist = np.minimum(_chamfer_distance(dist == 0), 20.0).astype(np.float32)  # THRESH_TRUNC at 20
    dist = ndimage.uniform_filter(dist, size=(1, 3, 3), mode="mirror").astype(np.uint8)
    dist = _equalize_hist(dist)
    ker = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=np.float64)
    dist = np.clip(np.rint(ndimage.correlate(dist.astype(np.float64), ker[None], mode="mirror")), 0, 255)
    dist = np.rint(ndimage.uniform_filter(dist, size=(1, 3, 3), mode="mirror"))  # cv2.blur on uint8
    m = lu8.astype(np.float32) * dist.astype(np.float32)
    mx = m.max(axis=(1, 2), keepdims=True)
    return np.where(mx > 0, m / np.where(mx > 0, mx, 1), 0).astype(np.float64)


@_corruption("cifar10", "spatter")
def cifar_spatter(x, severity, rng):
    """Water drops (levels 1-3) or mud (4-5) from a thresholded blurred Gaussian layer;
    (loc, scale, sigma, threshold, intensity/sigma2, mud) from make_cifar_c.py."""
    loc, scale, sigma, thr, c4, mud = [(0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0),
                                       (0.65, 0.3, 1, 0.69, 0.5, 0), (0.65, 0.1, 0.7, 0.69, 0.6, 1),
                                       (0.65, 0.1, 0.5, 0.68, 0.6, 1)][severity - 1]
    liquid = _gaussian(rng.normal(loc, scale, x.shape[:3]), (0, sigma, sigma))
    liquid[liquid < thr] = 0
    if not mud:
        m = _water_mask(liquid)[..., None] * c4
        colour = np.array([175, 238, 238]) / 255.0  # pale turquoise
        return np.clip(x + m * colour, 0, 1)
    m = _gaussian((liquid > thr).astype(np.float64), (0, c4, c4))
    m[m < 0.8] = 0
    colour = np.array([63, 42, 20]) / 255.0  # mud brown
    return np.clip(x * (1 - m[..., None]) + colour * m[..., None], 0, 1)
