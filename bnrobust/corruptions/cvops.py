"""The OpenCV primitives CIFAR-10-C's spatter (water drops) needs, re-implemented in numpy/scipy
for batches [N, H, W] so that OpenCV is not a dependency. They follow OpenCV's own algorithms
(e.g. Canny's fixed-point angle test) rather than textbook versions, since the mask they make
must match the original's (the package docstring says how closely it does)."""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def _cv_canny(img: np.ndarray, low: float, high: float) -> np.ndarray:
    """cv2.Canny(img, low, high) for uint8 images: 3x3 Sobel (replicated border), L1 magnitude,
    OpenCV's non-maximum suppression, 8-connected hysteresis. Returns a bool edge map."""
    f = img.astype(np.int64)
    k = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    gx = ndimage.correlate(f, k[None], mode="nearest")
    gy = ndimage.correlate(f, k.T[None], mode="nearest")
    mag = np.abs(gx) + np.abs(gy)
    p = np.pad(mag, ((0, 0), (1, 1), (1, 1)))
    c = p[:, 1:-1, 1:-1]
    left, right, up, down = p[:, 1:-1, :-2], p[:, 1:-1, 2:], p[:, :-2, 1:-1], p[:, 2:, 1:-1]
    ul, ur, dl, dr = p[:, :-2, :-2], p[:, :-2, 2:], p[:, 2:, :-2], p[:, 2:, 2:]
    ax, ay = np.abs(gx), np.abs(gy) << 15
    tg22 = ax * 13573  # tan(22.5 deg) in Q15, as OpenCV
    horizontal = ay < tg22
    vertical = ~horizontal & (ay > tg22 + (ax << 16))
    neg = (gx ^ gy) < 0
    diag = np.where(neg, (c > ur) & (c > dl), (c > ul) & (c > dr))
    peak = np.where(horizontal, (c > left) & (c >= right), np.where(vertical, (c > up) & (c >= down), diag))
    weak = peak & (c > int(np.floor(low)))
    strong = weak & (c > int(np.floor(high)))
    eight = np.zeros((3, 3, 3), bool)
    eight[1] = True
    labels, count = ndimage.label(weak, structure=eight)
    keep = np.zeros(count + 1, bool)
    keep[labels[strong]] = True
    keep[0] = False
    return keep[labels]


def _chamfer_distance(zero: np.ndarray) -> np.ndarray:
    """cv2.distanceTransform(src, DIST_L2, 5) for a batch: distance to the nearest zero pixel with
    the 5x5 chamfer weights (1, 1.4, 2.1969), by OpenCV's two raster passes (inf outside the image
    and where an image has no zero). Each row is one vectorized step: the left-to-right recurrence
    d[j] = min(t[j], d[j-1] + 1) is a running minimum of t[k] - k, plus j."""
    a, b, c = 1.0, 1.4, 2.1969
    n, h, w = zero.shape
    d = np.full((n, h + 4, w + 4), np.inf)
    d[:, 2:-2, 2:-2] = np.where(zero, 0.0, np.inf)
    j = np.arange(w, dtype=np.float64)
    for rows, step in ((range(2, h + 2), 1), (range(h + 1, 1, -1), -1)):
        for i in rows:
            p1, p2 = d[:, i - step], d[:, i - 2 * step]  # the two rows already final in this pass
            t = d[:, i, 2:-2]
            t = np.minimum(t, p1[:, 2:-2] + a)
            t = np.minimum(t, np.minimum(p1[:, 1:-3], p1[:, 3:-1]) + b)
            t = np.minimum(t, np.minimum(p1[:, :-4], p1[:, 4:]) + c)
            t = np.minimum(t, np.minimum(p2[:, 1:-3], p2[:, 3:-1]) + c)
            if step == 1:  # left to right, from the left neighbour
                d[:, i, 2:-2] = np.minimum.accumulate(t - a * j, axis=1) + a * j
            else:  # right to left, from the right neighbour
                r = j[::-1]
                d[:, i, 2:-2] = (np.minimum.accumulate((t - a * r)[:, ::-1], axis=1) + a * j)[:, ::-1]
    return d[:, 2:-2, 2:-2]


def _equalize_hist(img: np.ndarray) -> np.ndarray:
    """cv2.equalizeHist for each uint8 image of a batch (float32 scale, round half to even)."""
    out = np.empty_like(img)
    for i, im in enumerate(img):
        hist = np.bincount(im.ravel(), minlength=256)
        first = int(np.flatnonzero(hist)[0])
        total = im.size
        if hist[first] == total:
            out[i] = first
            continue
        scale = np.float32(255.0) / np.float32(total - hist[first])
        cum = np.cumsum(hist) - hist[:first + 1].sum()
        lut = np.clip(np.rint(cum.astype(np.float32) * scale), 0, 255).astype(np.uint8)
        lut[:first + 1] = 0
        out[i] = lut[im]
    return out
