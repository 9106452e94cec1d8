"""Corruptions (MNIST-C, CIFAR-10-C): contracts for every corruption and severity, one known-value
check per family, the loaders of the released files, and the `bnrobust corruptions` command."""
from __future__ import annotations

import hashlib
import io
import pickle

import numpy as np
import pytest
from PIL import Image
from scipy import stats

from bnrobust import corruptions as C
from bnrobust.corruptions.cifar10_c import _FROST_TINTS
from bnrobust.corruptions.common import _clipped_zoom, _zoom_matrix
from bnrobust.cli import main
from bnrobust.data import load_mnist_arrays
from bnrobust.data.cifar10 import CIFAR10_BATCHES
from bnrobust.errors import BnrobustError

MNIST_NAMES = ["gaussian_noise", "shot_noise", "impulse_noise", "glass_blur", "motion_blur", "shear",
               "scale", "rotate", "brightness", "translate", "stripe", "fog", "spatter", "dotted_line",
               "zigzag", "canny_edges"]
CIFAR_NAMES = ["gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
               "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
               "jpeg_compression", "speckle_noise", "gaussian_blur", "spatter", "saturate"]
CASES = [("mnist", n, 1) for n in MNIST_NAMES] + [("cifar10", n, s) for n in CIFAR_NAMES for s in range(1, 6)]

# Levels whose pixel change is not monotone by construction of the published tables.
NOT_MONOTONE = {
    "glass_blur": "levels trade blur for shuffling: (sigma, iterations) = (.05,1) (.25,1) (.4,1) (.25,2) (.4,2)",
    "motion_blur": "levels 3 and 4 share sigma 2; radius 6 -> 8 only adds taps of weight < 1%",
    "frost": "c0 < 1 darkens the image while c1 adds texture; they partly cancel",
    "elastic_transform": "the affine jitter shrinks (0.08 -> 0.03 x 32 px) as the elastic field grows",
    "spatter": "levels 1-3 add water drops, 4-5 mud",
    "saturate": "levels 1-2 desaturate, 3-5 saturate",
}


@pytest.fixture(scope="module")
def digits(request) -> np.ndarray:
    """8 real MNIST test digits when the data is there, else synthetic digit-like images."""
    try:
        root = request.getfixturevalue("mnist_root")
    except pytest.skip.Exception:
        return C.synthetic_digits(8)
    return load_mnist_arrays(root, download=False)[2][:8].copy()


@pytest.fixture(scope="module")
def colours() -> np.ndarray:
    return C.synthetic_color_images(32, seed=0)


def batch(suite, digits, colours):
    return digits if suite == "mnist" else colours


def change(y, x) -> float:
    return float(np.abs(y.astype(np.float64) - x.astype(np.float64)).mean())


# ---------------------------------------------------------------------------
# Contracts for every corruption and severity


def test_registries_hold_the_published_corruptions():
    assert list(C.MNIST_C) == MNIST_NAMES
    assert list(C.CIFAR10_C) == CIFAR_NAMES
    assert set(C.MNIST_C_FILES) - {"identity"} == set(MNIST_NAMES) - {"gaussian_noise"}
    assert C.CIFAR10_C_FILES == tuple(CIFAR_NAMES)
    assert C.corruption_names("mnist") == MNIST_NAMES
    assert "frost" in C.NOT_IMPLEMENTED["cifar10/frost"]


@pytest.mark.parametrize("suite,name,severity", CASES)
def test_keeps_shape_dtype_and_range(suite, name, severity, digits, colours):
    x = batch(suite, digits, colours)[:6]
    y = C.corrupt(x, name, severity, seed=1, suite=suite)
    assert y.shape == x.shape and y.dtype == np.uint8
    assert change(y, x) > 0, "the corruption left every image unchanged"
    f = C.corrupt(x.astype(np.float32), name, severity, seed=1, suite=suite)
    assert f.shape == x.shape and f.dtype == np.float32
    assert np.isfinite(f).all() and f.min() >= 0 and f.max() <= 255
    assert np.abs(f - y).mean() < 3, "float and uint8 inputs must give the same corruption"


@pytest.mark.parametrize("suite,name,severity", CASES)
def test_seeded(suite, name, severity, digits, colours):
    x = digits if suite == "mnist" else colours[:4]  # 8 digits: 2^-8 odds that two seeds flip alike
    a = C.corrupt(x, name, severity, seed=3, suite=suite)
    assert np.array_equal(a, C.corrupt(x, name, severity, seed=3, suite=suite))
    b = C.corrupt(x, name, severity, seed=4, suite=suite)
    if name in C.DETERMINISTIC[suite]:
        assert np.array_equal(a, b)
    else:
        assert not np.array_equal(a, b)


@pytest.mark.parametrize("name", CIFAR_NAMES)
def test_cifar_severity_monotone(name, colours):
    changes = [change(C.corrupt(colours, name, s, seed=0, suite="cifar10"), colours) for s in range(1, 6)]
    if name in NOT_MONOTONE:
        assert min(changes) > 0.1, NOT_MONOTONE[name]
    else:
        assert all(b > a for a, b in zip(changes, changes[1:])), changes


def test_mnist_has_one_severity(digits):
    assert C.SEVERITIES["mnist"] == (1,)
    with pytest.raises(BnrobustError, match="single severity"):
        C.corrupt(digits, "fog", 2, suite="mnist")


def test_prefix_and_channel_axis(digits, colours):
    for suite, x, name in (("mnist", digits, "zigzag"), ("cifar10", colours, "snow")):
        full = C.corrupt(x, name, 1, seed=5, suite=suite, batch_size=3)
        assert np.array_equal(full[:3], C.corrupt(x[:3], name, 1, seed=5, suite=suite, batch_size=3))
    with_channel = C.corrupt(digits[..., None], "rotate", 1, seed=2)
    assert with_channel.shape == digits.shape + (1,)
    assert np.array_equal(with_channel[..., 0], C.corrupt(digits, "rotate", 1, seed=2))
    # every public function has the uniform signature (images, severity, rng)
    y = C.CIFAR10_C["contrast"](colours[:2], 3, np.random.default_rng(0))
    assert y.shape == (2, 32, 32, 3)


def test_errors_are_one_line(digits):
    cases = [
        (lambda: C.corrupt(digits, "nope"), "unknown MNIST-C corruption 'nope'; choose from: gaussian_noise"),
        (lambda: C.corrupt(digits, "fog", suite="svhn"), "unknown corruption suite"),
        (lambda: C.corrupt(digits, "fog", 1, suite="cifar10"), r"need images of shape \[N, 32, 32, 3\]"),
        (lambda: C.corrupt(digits.astype(np.int32), "fog"), "uint8 or float"),
        (lambda: C.corrupt(digits * 2.0, "fog"), r"\[0, 255\]"),
        (lambda: C.corrupt(digits, "fog", seed=-1), "seed"),
        (lambda: C.corrupt(C.synthetic_color_images(1), "fog", 6, suite="cifar10"), "1..5"),
    ]
    for fn, msg in cases:
        with pytest.raises(BnrobustError, match=msg) as e:
            fn()
        assert "\n" not in str(e.value)


# ---------------------------------------------------------------------------
# Known values, one or more per family


def grey(value: float, shape) -> np.ndarray:
    return np.full(shape, value, dtype=np.float64)


@pytest.mark.parametrize("severity,sigma", list(enumerate([0.04, 0.06, 0.08, 0.09, 0.10], start=1)))
def test_gaussian_noise_std(severity, sigma):
    x = grey(127.5, (16, 32, 32, 3))
    noise = (C.corrupt(x, "gaussian_noise", severity, suite="cifar10") - x) / 255
    assert noise.std() == pytest.approx(sigma, rel=0.03)
    assert abs(noise.mean()) < 0.01


def test_noise_constants_mnist():
    x = grey(127.5, (64, 28, 28))
    z = np.linspace(-9, 9, 200001)
    clipped = np.clip(0.5 + 0.38 * z, 0, 1)  # the std of clipped N(0.5, 0.38^2)
    w = stats.norm.pdf(z) / stats.norm.pdf(z).sum()
    expected = np.sqrt((w * clipped ** 2).sum() - (w * clipped).sum() ** 2)
    assert (C.corrupt(x, "gaussian_noise") / 255).std() == pytest.approx(expected, rel=0.03)
    # shot noise: Poisson(3 * 0.5) / 3, clipped at 1
    k = np.arange(40)
    vals, p = np.minimum(k / 3, 1), stats.poisson.pmf(k, 1.5)
    shot = C.corrupt(x, "shot_noise") / 255
    assert shot.mean() == pytest.approx((p * vals).sum(), rel=0.02)
    assert shot.std() == pytest.approx(np.sqrt((p * vals ** 2).sum() - (p * vals).sum() ** 2), rel=0.03)
    imp = C.corrupt(x, "impulse_noise")
    assert np.isin(imp, [0, 127.5, 255]).all()
    assert (imp != 127.5).mean() == pytest.approx(0.17, abs=0.01)


@pytest.mark.parametrize("severity", range(1, 6))
def test_photon_impulse_speckle_constants(severity):
    x = grey(127.5, (8, 32, 32, 3))
    c = [500, 250, 100, 75, 50][severity - 1]
    shot = C.corrupt(x, "shot_noise", severity, suite="cifar10") / 255
    assert shot.std() == pytest.approx(np.sqrt(0.5 / c), rel=0.05)
    amount = [0.01, 0.02, 0.03, 0.05, 0.07][severity - 1]
    imp = C.corrupt(x, "impulse_noise", severity, suite="cifar10")
    assert (imp == 0).mean() == pytest.approx(amount / 2, rel=0.2)
    assert (imp == 255).mean() == pytest.approx(amount / 2, rel=0.2)
    c = [0.06, 0.1, 0.12, 0.16, 0.2][severity - 1]
    speckle = (C.corrupt(x, "speckle_noise", severity, suite="cifar10") - x) / 255
    assert speckle.std() == pytest.approx(0.5 * c, rel=0.05)


@pytest.mark.parametrize("severity", range(1, 6))
def test_blurs_keep_a_constant_image(severity):
    x = np.full((3, 32, 32, 3), 100, np.uint8)
    for name in ("gaussian_blur", "defocus_blur", "zoom_blur", "motion_blur", "glass_blur",
                 "elastic_transform", "pixelate"):
        assert np.array_equal(C.corrupt(x, name, severity, seed=severity, suite="cifar10"), x), name
    m = np.full((3, 28, 28), 100, np.uint8)
    for name in ("glass_blur", "motion_blur"):
        assert np.array_equal(C.corrupt(m, name, 1, seed=severity), m), name


def test_motion_blur_trail():
    """One bright pixel becomes a trail of total mass ~1 behind it: each output pixel averages the
    pixels ahead of it (toward +x, within 45 degrees), so the trail runs toward -x."""
    x = np.zeros((20, 28, 28), np.float64)
    x[:, 10, 6] = 255
    y = C.corrupt(x, "motion_blur", seed=0)
    assert np.abs(y.sum(axis=(1, 2)) - 255).max() < 21 * 1.0  # at most 1/255 lost per tap by truncation
    for img in y:
        rows, cols = np.nonzero(img > 0)
        dx, dy = 6 - cols, rows - 10
        assert (dx >= 0).all() and (np.abs(dy) <= dx + 1).all()
    assert len({tuple(np.argwhere(img > 0)[-1]) for img in y}) > 1, "angles must vary"


def test_zoom_matrix_matches_scipy_zoom():
    x = np.random.default_rng(0).random((2, 32, 32, 3))
    for z in (1.0, 1.07, 1.25, 1.75, 2.25):
        w = _zoom_matrix(32, z)
        assert np.allclose(np.einsum("ai,nijc,bj->nabc", w, x, w), _clipped_zoom(x, z), atol=1e-12)


def ramp(n=4, size=28) -> np.ndarray:
    """Values linear in the column: bilinear warps reproduce it exactly inside the image."""
    return np.broadcast_to(50 + 4 * np.arange(size, dtype=np.float64), (n, size, size)).copy()


def test_rotate_shear_scale_translate_known_angles():
    x = ramp()
    yy, xx = np.mgrid[8:20, 8:20].astype(np.float64)
    inner = (slice(None), slice(8, 20), slice(8, 20))

    def expected(a1, a2):  # output pixel (x, y) samples input column a1 (x - 13.5) + a2 (y - 13.5) + 13.5
        return 50 + 4 * (a1 * (xx - 13.5) + a2 * (yy - 13.5) + 13.5)

    for name, options in (
            ("rotate", [(np.cos(a), -np.sin(a)) for a in (0.4, -0.4)]),
            ("shear", [(1.0, -np.sin(s)) for s in (0.4, -0.4)])):
        y = C.corrupt(x, name, seed=0)[inner]
        hits = [min(np.abs(img - expected(*o)).max() for o in options) for img in y]
        assert max(hits) < 1e-9, name
    scaled = C.corrupt(x, "scale")[inner]
    assert np.abs(scaled - expected(1 / 0.7, 0)).max() < 1e-9
    shifted = C.corrupt(x, "translate", seed=0)[inner]
    for img in shifted:
        assert min(np.abs(img - (50 + 4 * (xx + dx))).max() for dx in (-3, 3)) < 1e-9


def test_elastic_and_glass_blur_move_pixels_only_locally(colours):
    y = C.corrupt(colours, "elastic_transform", 1, seed=0, suite="cifar10")
    assert change(y, colours) < 40
    g = C.corrupt(np.arange(28 * 28, dtype=np.float64).reshape(1, 28, 28) % 256, "glass_blur", seed=0)
    assert g.shape == (1, 28, 28)


def test_brightness_and_saturate_follow_hsv():
    from skimage import color
    # known pixel: (100, 50, 25) with V += 0.3 keeps H and S, so RGB scales by V'/V = (100/255 + .3) / (100/255)
    px = np.array([100, 50, 25], np.uint8)
    y = C.corrupt(np.broadcast_to(px, (1, 32, 32, 3)).copy(), "brightness", 5, suite="cifar10")
    assert tuple(y[0, 0, 0]) == (176, 88, 44)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3))
    x[0, 0, :4] = [0, 0, 0]  # black: V = 0, grey result
    for s in range(1, 6):
        c = [0.05, 0.1, 0.15, 0.2, 0.3][s - 1]
        hsv = color.rgb2hsv(x / 255)
        hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
        ref = np.clip(color.hsv2rgb(hsv), 0, 1) * 255
        assert np.allclose(C.corrupt(x, "brightness", s, suite="cifar10"), ref, atol=1e-6)
        a, b = [(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)][s - 1]
        hsv = color.rgb2hsv(x / 255)
        hsv[..., 1] = np.clip(hsv[..., 1] * a + b, 0, 1)
        ref = np.clip(color.hsv2rgb(hsv), 0, 1) * 255
        assert np.allclose(C.corrupt(x, "saturate", s, suite="cifar10"), ref, atol=1e-6)
    d = np.arange(256, dtype=np.uint8)[None].repeat(784 // 256 + 1, 0).ravel()[:784].reshape(1, 28, 28)
    y = C.corrupt(d, "brightness").astype(np.float64)  # x + 127.5 rounded (each value is a tie)
    assert np.abs(y - np.minimum(d + 127.5, 255)).max() <= 0.5


@pytest.mark.parametrize("severity", range(1, 6))
def test_fog_range_and_contrast_mean(severity):
    v, c0 = 150.0, [0.2, 0.5, 0.75, 1, 1.5][severity - 1]
    y = C.corrupt(grey(v, (4, 32, 32, 3)), "fog", severity, seed=1, suite="cifar10") / 255
    u = v / 255  # (u + c0 p) u / (u + c0) with the plasma p spanning exactly [0, 1]
    assert y.min() == pytest.approx(u * u / (u + c0), abs=1e-6)
    assert y.max() == pytest.approx(u, abs=1e-6)
    x = C.synthetic_color_images(4, seed=1).astype(np.float64)
    y = C.corrupt(x, "contrast", severity, suite="cifar10")
    assert np.allclose(y.mean(axis=(1, 2)), x.mean(axis=(1, 2)), atol=1e-9)
    c = [0.75, 0.5, 0.4, 0.3, 0.15][severity - 1]
    assert np.allclose(y.std(axis=(1, 2)), c * x.std(axis=(1, 2)), atol=1e-9)


def test_mnist_fog_darkens_toward_the_max():
    x = grey(200, (3, 28, 28))
    y = C.corrupt(x, "fog", seed=0)
    u = 200 / 255
    assert y.max() <= 200 + 1e-9 and y.min() >= 255 * u * u / (u + 3) - 1e-9
    assert y.std() > 1


def test_jpeg_and_pixelate_match_pil(colours):
    x = colours[:3]
    for s, q in enumerate([80, 65, 58, 50, 40], start=1):
        y = C.corrupt(x, "jpeg_compression", s, suite="cifar10")
        buf = io.BytesIO()
        Image.fromarray(x[0]).save(buf, "JPEG", quality=q)
        assert np.array_equal(y[0], np.asarray(Image.open(buf)))
        again = C.corrupt(y, "jpeg_compression", s, suite="cifar10")
        assert change(again, y) < change(y, x)  # close to idempotent
    small = int(32 * 0.65)
    ref = Image.fromarray(x[1]).resize((small, small), Image.BOX).resize((32, 32), Image.BOX)
    assert np.array_equal(C.corrupt(x, "pixelate", 5, suite="cifar10")[1], np.asarray(ref))


def test_frost_is_procedural_and_documented(colours):
    tex = C.frost_texture(200, np.random.default_rng(0))
    assert tex.shape == (200, 32, 32, 3) and tex.min() >= 0 and tex.max() <= 255
    means = tex.mean(axis=(1, 2))
    tints = _FROST_TINTS
    assert (np.abs(means[:, None, :] - tints[None]).max(-1).min(-1) < 12).all()
    x = colours.astype(np.float64)
    for s in range(1, 6):
        c0 = [1, 1, 0.9, 0.85, 0.75][s - 1]
        assert (C.corrupt(x, "frost", s, seed=0, suite="cifar10") >= c0 * x - 1e-9).all()
    # with textures supplied, frost is exactly clip(c0 x + c1 crop)
    frost = C.make_frost([np.full((40, 50, 3), 200, np.uint8)])
    y = frost(x, 3, np.random.default_rng(0))
    assert np.allclose(y, np.clip(0.9 * x + 0.4 * 200, 0, 255))
    assert "procedural" in C.__doc__ and "frost" in C.NOT_IMPLEMENTED["cifar10/frost"]


def test_load_frost_textures(tmp_path):
    for i, ext in enumerate(["png", "png", "png", "jpg", "jpg"], start=1):
        Image.fromarray(np.full((200, 300, 3), 10 * i, np.uint8)).save(tmp_path / f"frost{i}.{ext}")
    texs = C.load_frost_textures(tmp_path)
    assert [t.shape for t in texs] == [(40, 60, 3)] * 5
    (tmp_path / "frost2.png").write_bytes(b"not a png")
    with pytest.raises(BnrobustError, match="frost2.png"):
        C.load_frost_textures(tmp_path)


@pytest.mark.parametrize("severity", range(1, 6))
def test_snow_and_spatter_only_add_their_layer(severity, colours):
    x = colours[:8].astype(np.float64)
    blend = [0.95, 0.9, 0.9, 0.85, 0.8][severity - 1]
    grey_ = (x / 255 @ np.array([0.299, 0.587, 0.114]))[..., None]
    base = 255 * np.clip(blend * x / 255 + (1 - blend) * np.maximum(x / 255, grey_ * 1.5 + 0.5), 0, 1)
    y = C.corrupt(x, "snow", severity, seed=0, suite="cifar10")
    assert (y >= base - 1e-9).all() and (y > base + 1).mean() > 0.005
    y = C.corrupt(x, "spatter", severity, seed=0, suite="cifar10")
    changed = np.abs(y - x).max(-1) > 1e-9
    assert changed.mean() > 0
    if severity <= 3:  # water: adds pale turquoise
        assert (y >= x - 1e-9).all()
    else:  # mud: changed pixels are >= 80% mud
        mud = np.array([63, 42, 20])
        assert (np.abs(y - mud)[changed] <= 0.2 * np.abs(x - mud)[changed] + 1e-6).all()


def test_mnist_line_corruptions(digits):
    x = digits.astype(np.float64)
    dotted = C.corrupt(x, "dotted_line", seed=0)
    off = (np.arange(28) % 4 < 2) | (np.arange(28) == 27)
    assert np.array_equal(dotted[:, :, off], x[:, :, off])
    assert (dotted >= x - 1e-9).all() and (dotted > x).any()
    zig = C.corrupt(x, "zigzag", seed=0)
    assert (zig >= x - 1e-9).all() and ((zig > x).sum(axis=(1, 2)) > 0).all()
    stripe = C.corrupt(digits, "stripe")
    assert np.array_equal(C.corrupt(stripe, "stripe"), digits)
    assert np.array_equal(stripe[:, :, 7:21], digits[:, :, 7:21])
    edges = C.corrupt(digits, "canny_edges")
    assert set(np.unique(edges)) <= {0, 255} and (edges == 255).any()
    assert not C.corrupt(np.zeros((1, 28, 28), np.uint8), "canny_edges").any()
    mud = C.corrupt(x, "spatter", seed=1)
    changed = np.abs(mud - x) > 1e-9
    assert (np.abs(mud - 63)[changed] <= 0.2 * np.abs(x - 63)[changed] + 1e-6).all()


# ---------------------------------------------------------------------------
# Loaders of the released files, on small files in the exact official formats


def test_load_mnist_c(tmp_path):
    d = tmp_path / "mnist_c" / "shot_noise"
    d.mkdir(parents=True)
    imgs = np.random.default_rng(0).integers(0, 256, (10000, 28, 28, 1), dtype=np.uint8)
    np.save(d / "test_images.npy", imgs)
    np.save(d / "test_labels.npy", np.arange(10000, dtype=np.uint8) % 10)
    x, y = C.load_mnist_c(tmp_path, "shot_noise")
    assert x.shape == (10000, 28, 28) and x.dtype == np.uint8 and np.array_equal(x, imgs[..., 0])
    assert y.shape == (10000,) and y[:3].tolist() == [0, 1, 2]
    with pytest.raises(BnrobustError, match="unknown MNIST-C corruption 'snow'"):
        C.load_mnist_c(tmp_path, "snow")
    with pytest.raises(BnrobustError, match="missing"):
        C.load_mnist_c(tmp_path, "fog")
    np.save(d / "test_labels.npy", np.zeros(9999, np.uint8))
    with pytest.raises(BnrobustError, match=r"expected uint8 \[10000\]"):
        C.load_mnist_c(tmp_path, "shot_noise")
    (d / "test_images.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(BnrobustError, match="corrupt"):
        C.load_mnist_c(tmp_path, "shot_noise")


def test_load_cifar10_c(tmp_path):
    d = tmp_path / "CIFAR-10-C"
    d.mkdir()
    # sparse files of the official size: each severity block tagged in its first pixel
    imgs = np.lib.format.open_memmap(d / "fog.npy", mode="w+", dtype=np.uint8, shape=(50000, 32, 32, 3))
    for s in range(5):
        imgs[s * 10000, 0, 0, 0] = s + 1
    imgs.flush()
    del imgs
    np.save(d / "labels.npy", (np.arange(50000) % 10).astype(np.uint8))
    for s in range(1, 6):
        x, y = C.load_cifar10_c(tmp_path, "fog", s)
        assert x.shape == (10000, 32, 32, 3) and x.dtype == np.uint8 and x[0, 0, 0, 0] == s
        assert y.shape == (10000,)
    with pytest.raises(BnrobustError, match="1..5"):
        C.load_cifar10_c(tmp_path, "fog", 0)
    with pytest.raises(BnrobustError, match="missing"):
        C.load_cifar10_c(tmp_path, "snow", 1)
    with pytest.raises(BnrobustError, match="unknown CIFAR-10-C corruption"):
        C.load_cifar10_c(tmp_path, "zigzag", 1)
    raw = (d / "fog.npy").read_bytes()
    (d / "fog.npy").write_bytes(raw[: len(raw) // 2])  # truncated download
    with pytest.raises(BnrobustError, match="corrupt"):
        C.load_cifar10_c(tmp_path, "fog", 5)
    np.save(d / "fog.npy", np.zeros((10000, 32, 32, 3), np.uint8))
    with pytest.raises(BnrobustError, match=r"expected uint8 \[50000, 32, 32, 3\]"):
        C.load_cifar10_c(tmp_path, "fog", 1)


def write_fake_cifar(root, n=4):
    """cifar-10-batches-py with pickled dicts as the official ones (bytes keys, uint8 CHW rows)."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        data[0, :3] = [11, 12, 13]  # red channel, row 0, columns 0..2
        data[0, 1024] = 99  # green channel, pixel (0, 0)
        blob = {b"batch_label": name.encode(), b"labels": list(range(n)), b"data": data,
                b"filenames": [b"x.png"] * n}
        (d / name).write_bytes(pickle.dumps(blob, protocol=2))
    return d


def test_load_cifar10_arrays(tmp_path):
    d = write_fake_cifar(tmp_path)
    xtr, ytr, xte, yte = C.load_cifar10_arrays(tmp_path, verify=False)
    assert xtr.shape == (20, 32, 32, 3) and xte.shape == (4, 32, 32, 3) and xtr.dtype == np.uint8
    assert xte[0, 0, :3, 0].tolist() == [11, 12, 13] and xte[0, 0, 0, 1] == 99  # CHW -> HWC
    assert ytr.tolist() == [0, 1, 2, 3] * 5
    with pytest.raises(BnrobustError, match="data_batch_1 is corrupt .*md5"):
        C.load_cifar10_arrays(tmp_path, verify=True)
    assert CIFAR10_BATCHES["test_batch"] == "40351d587109b95175f43aff81a1287e"
    assert hashlib.md5((d / "test_batch").read_bytes()).hexdigest() != CIFAR10_BATCHES["test_batch"]


def test_load_cifar10_arrays_rejects_bad_files(tmp_path):
    d = write_fake_cifar(tmp_path / "a")
    (d / "data_batch_3").unlink()
    with pytest.raises(BnrobustError, match="data_batch_3 is missing"):
        C.load_cifar10_arrays(tmp_path / "a", verify=False)
    d = write_fake_cifar(tmp_path / "b")
    (d / "test_batch").write_bytes(b"garbage")
    with pytest.raises(BnrobustError, match="not a CIFAR-10 python batch"):
        C.load_cifar10_arrays(tmp_path / "b", verify=False)
    d = write_fake_cifar(tmp_path / "c")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))
    (d / "test_batch").write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
    with pytest.raises(BnrobustError, match="not a CIFAR-10 python batch"):
        C.load_cifar10_arrays(tmp_path / "c", verify=False)
    assert not marker.exists()
    d = write_fake_cifar(tmp_path / "d")
    blob = {b"labels": [0, 1], b"data": np.zeros((2, 100), np.uint8)}
    (d / "test_batch").write_bytes(pickle.dumps(blob, protocol=2))
    with pytest.raises(BnrobustError, match=r"expected \[N, 3072\]"):
        C.load_cifar10_arrays(tmp_path / "d", verify=False)


# ---------------------------------------------------------------------------
# CLI


def test_cli_lists_and_shows(tmp_path, capsys):
    assert main(["corruptions"]) == 0
    out = capsys.readouterr().out
    assert "mnist (one severity): gaussian_noise" in out and "cifar10 (severities 1..5)" in out
    empty = tmp_path / "data"
    empty.mkdir()
    assert main(["corruptions", "--show", "--out", str(tmp_path / "figs"), "--data-dir", str(empty)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert any("using synthetic images" in line for line in out)
    assert any("using synthetic digit-like images" in line for line in out)
    for suite in ("mnist", "cifar10"):
        png = tmp_path / "figs" / f"corruptions_{suite}.png"
        assert str(png) in out and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["corruptions", "--show", "--suite", "svhn"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_cli_uses_cifar_batches_when_present(tmp_path, capsys):
    write_fake_cifar(tmp_path)
    # the fake batches are not the official files: the md5 check names the file in one line
    assert main(["corruptions", "--show", "--suite", "cifar10", "--out", str(tmp_path), "--data-dir",
                 str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bnrobust: error: CIFAR-10 file") and "md5" in err and "\n" not in err
