"""MNIST-C (Mu & Gilmer, 2019): the 15 corruptions of the released dataset plus Gaussian noise,
registered in MNIST_C by importing this module."""
from __future__ import annotations

import numpy as np

from .common import (_affine_warp, _centered, _corruption, _gaussian, _glass_shuffle, _motion_blur, _plasma,
                     _salt_and_pepper)

# MNIST-C. Constants: google-research/mnist-c, corruptions.py, at each function's default severity
# (the one level MNIST-C uses); the 5-level table it comes from is quoted in each comment.


def _mnist_gauss(x, sigma):  # multichannel=True on a 2-D image: skimage blurs along axis 0 only
    return _gaussian(x, (0, sigma, 0))


@_corruption("mnist", "gaussian_noise")
def mnist_gaussian_noise(x, severity, rng):
    """Additive N(0, 0.38^2) in [0, 1] units (table [.08, .12, .18, .26, .38], level 5). Not one of
    MNIST-C's 15 (the repository's extended list has it); kept as the plain-noise reference."""
    return np.clip(x + rng.normal(0, 0.38, x.shape), 0, 1)


@_corruption("mnist", "shot_noise")
def mnist_shot_noise(x, severity, rng):
    """Photon noise Poisson(3 x) / 3 (level 5 of [60, 25, 12, 5, 3] photons at full intensity)."""
    return np.clip(rng.poisson(x * 3) / 3.0, 0, 1)


@_corruption("mnist", "impulse_noise")
def mnist_impulse_noise(x, severity, rng):
    """Salt and pepper on 17% of pixels (level 4 of [.03, .06, .09, .17, .27])."""
    return _salt_and_pepper(x, 0.17, rng)


@_corruption("mnist", "glass_blur")
def mnist_glass_blur(x, severity, rng):
    """Blur, locally shuffle (each pixel with prob. 1/2), blur: (sigma, delta, iters) = (0.7, 1, 2),
    level 1. Blurs vertically only and draws offsets in {-1, 0}, as the original does."""
    u8 = np.floor(np.clip(_mnist_gauss(x, 0.7), 0, 1) * 255).astype(np.uint8)
    u8 = _glass_shuffle(u8, 1, 2, rng, swap_prob=0.5, copy_only=False)
    return np.clip(_mnist_gauss(u8 / 255.0, 0.7), 0, 1)


@_corruption("mnist", "motion_blur")
def mnist_motion_blur(x, severity, rng):
    """ImageMagick motion blur, (radius, sigma) = (10, 3) (level 1), angle ~ U(-45, 45) degrees."""
    return _motion_blur(x, 10, 3, rng.uniform(-45, 45, len(x)))


def _mnist_affine(x, lin):
    return np.clip(_affine_warp(x, _centered(lin, 13.5), "constant"), 0, 1)


def _signs(rng, shape):
    return rng.choice(np.array([-1.0, 1.0]), size=shape)


@_corruption("mnist", "shear")
def mnist_shear(x, severity, rng):
    """Shear by +-0.4 (level 2 of [.2, .4, .6, .8, 1]) about the centre, random direction. The
    scikit-image of 2019 made AffineTransform(shear=s) = [[1, -sin s], [0, cos s]] (output -> input);
    current releases use tan s, so the 2019 matrix is written out here."""
    s = 0.4 * _signs(rng, len(x))
    lin = np.zeros((len(x), 2, 2))
    lin[:, 0, 0], lin[:, 0, 1], lin[:, 1, 1] = 1, -np.sin(s), np.cos(s)
    return _mnist_affine(x, lin)


@_corruption("mnist", "scale")
def mnist_scale(x, severity, rng):
    """Shrink to 0.7 about the centre (level 3: inverse-map scale 1/0.7)."""
    lin = np.broadcast_to(np.eye(2) / 0.7, (len(x), 2, 2)).copy()
    return _mnist_affine(x, lin)


@_corruption("mnist", "rotate")
def mnist_rotate(x, severity, rng):
    """Rotate by +-0.4 rad (level 2 of [.2, .4, .6, .8, 1]) about the centre, random sign."""
    r = 0.4 * _signs(rng, len(x))
    c, s = np.cos(r), np.sin(r)
    lin = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], 1)
    return _mnist_affine(x, lin)


@_corruption("mnist", "translate")
def mnist_translate(x, severity, rng):
    """Shift by +-3 pixels in x and in y (level 3 of [1, 2, 3, 4, 5]), random signs."""
    mats = np.zeros((len(x), 2, 3))
    mats[:, 0, 0] = mats[:, 1, 1] = 1
    mats[:, :, 2] = 3 * _signs(rng, (len(x), 2))
    return np.clip(_affine_warp(x, mats, "constant"), 0, 1)


@_corruption("mnist", "brightness")
def mnist_brightness(x, severity, rng):
    """HSV V + 0.5 (level 5 of [.1, .2, .3, .4, .5]) via grey->RGB->HSV->RGB->grey, which for a
    grey pixel is exactly min(x + 0.5, 1) (rgb2gray's weights sum to 1)."""
    return np.clip(x + 0.5, 0, 1)


@_corruption("mnist", "stripe")
def mnist_stripe(x, severity, rng):
    """Invert the 7 leftmost and the 7 rightmost columns."""
    y = x.copy()
    y[:, :, :7] = 1 - y[:, :, :7]
    y[:, :, 21:] = 1 - y[:, :, 21:]
    return y


@_corruption("mnist", "fog")
def mnist_fog(x, severity, rng):
    """Add 3.0 x a 256x256 plasma fractal (decay 1.4, level 5) cropped to 28x28, rescale by
    max/(max + 3.0)."""
    c0, decay = 3.0, 1.4
    fog = _plasma(len(x), 256, decay, rng, crop=28)
    mx = x.max(axis=(1, 2), keepdims=True)
    return np.clip((x + c0 * fog) * mx / (mx + c0), 0, 1)


@_corruption("mnist", "spatter")
def mnist_spatter(x, severity, rng):
    """Mud splashes: level 4, (loc, scale, sigma, threshold, sigma2) = (.65, .3, 1, .65, 1.5)."""
    liquid = _gaussian(rng.normal(0.65, 0.3, x.shape), (0, 1, 1))
    liquid[liquid < 0.65] = 0
    m = _gaussian((liquid > 0.65).astype(np.float64), (0, 1.5, 1.5))
    m[m < 0.8] = 0
    return np.clip(x * (1 - m) + 63 / 255 * m, 0, 1)


def _lines(c0, r0, c1, r1, size=28):
    """The original line_from_points, batched: brightness log(1 - d/2.3) + 1 of the vertical
    distance d to the line through (c0, r0), (c1, r1), kept on columns floor(c0)..ceil(c1)-1."""
    c0, r0, c1, r1 = (np.asarray(v, dtype=np.float64)[:, None, None] for v in (c0, r0, c1, r1))
    cc = np.arange(size, dtype=np.float64)[None, None, :]
    rr = np.arange(size, dtype=np.float64)[None, :, None]
    same = c1 == c0
    m = (r1 - r0) / np.where(same, 1, c1 - c0)
    dist = np.clip(np.abs(rr - (m * (cc - c0) + r0)), 0, 2.3 - 1e-10)
    line = np.clip(np.log(1 - dist / 2.3) + 1, 0, 1)
    keep = (cc >= np.floor(c0)) & (cc < np.ceil(c1)) & ~same
    return line * keep


@_corruption("mnist", "dotted_line")
def mnist_dotted_line(x, severity, rng):
    """A dotted line from (0, r0) to (27, r1), r ~ U{0..26}: 2 columns off, 2 on."""
    r = rng.integers(0, 27, size=(len(x), 2))
    line = _lines(np.zeros(len(x)), r[:, 0], np.full(len(x), 27.0), r[:, 1])
    line[:, :, (np.arange(28) % 4) < 2] = 0
    return np.clip(x + line, 0, 1)


@_corruption("mnist", "zigzag")
def mnist_zigzag(x, severity, rng):
    """A zigzag (period 4, amplitude 2 px) from column 2 to 25 at a small random slope."""
    n, a, b, c0, c1 = len(x), 2.0, 2.0, 2, 25
    r0 = rng.integers(0, 27, n).astype(np.float64)
    r1 = r0 + rng.integers(-5, 5, n)
    theta = np.arctan((r1 - r0) / (c1 - c0))
    d = (c1 - c0) / np.cos(theta)
    # d is in [23, 23.6] for every slope allowed, so every zigzag has the same 8 vertices
    k = int((d.min() - a) // (2 * a)) + 1
    assert k == int((d.max() - a) // (2 * a)) + 1
    pts_c = [np.zeros(n)] + [np.full(n, (2 * i + 1) * a) for i in range(k)]
    pts_r = [np.zeros(n)] + [np.full(n, (-1) ** i * b) for i in range(k)]
    max_c = (2 * a) * (d // (2 * a))
    pts_c.append(d)
    pts_r.append(((-1) ** (k - 1) * b) / (2 * (d - max_c)))  # the original's last vertex
    pc, pr = np.stack(pts_c, 1), np.stack(pts_r, 1)
    cs = np.cos(theta)[:, None] * pc - np.sin(theta)[:, None] * pr + c0
    rs = np.sin(theta)[:, None] * pc + np.cos(theta)[:, None] * pr + r0[:, None]
    y = x.copy()
    for i in range(1, pc.shape[1]):
        y = np.clip(y + _lines(cs[:, i - 1], rs[:, i - 1], cs[:, i], rs[:, i]), 0, 1)
    return y


@_corruption("mnist", "canny_edges")
def mnist_canny_edges(x, severity, rng):
    """Canny edge map (skimage.feature.canny, default sigma 1 and thresholds) as white on black."""
    from skimage import feature
    return np.stack([feature.canny(im) for im in x]).astype(np.float64)
