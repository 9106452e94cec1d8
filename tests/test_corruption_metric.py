"""The `corruptions` metric on the real-data pipeline (bnrobust.eval.corrupted): CIFAR-10-C on the
`cifar10` task (uint8 storage, per-channel standardization) from the seeded generators and from the
released files, on small synthetic CIFAR-10 files in the official binary format; the decode
equivalence (the identity corruption gives exactly the clean accuracy); MNIST-C unchanged; the
output keys; the paper's mCE."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from bnrobust import corruptions as C
from bnrobust.data import Dataset, DecodeImages
from bnrobust.eval import EVALS, EvalContext, accuracy_and_loss, corrupted_test_set, mean_corruption_error
from bnrobust.errors import BnrobustError
from test_cifar10_dataset import N_TEST, build, chw, synth  # noqa: F401  (synth: the synthetic CIFAR-10 fixture)

KEYS = {"overall", "mce", "by_severity", "categories", "source", "n"}


def memorizer(x: torch.Tensor, y: torch.Tensor, steps: int = 150) -> nn.Module:
    """A linear model fitted to (x, y) until it classifies them all correctly: any change to the
    images it sees (a wrong decode, axes mixed up) shows in its accuracy."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(x[0].numel(), 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    return model


@pytest.fixture
def task(synth):  # noqa: F811
    root, arrays = synth
    ds = build(root, n_val=20, augment=False)
    model = memorizer(ds.inputs("test"), ds.y_test)
    return root, arrays, ds, model


def run(model, ds, root, batch_size=16, seed=0, **opts) -> dict:
    ctx = EvalContext(batch_size, seed, ds.clip, torch.device("cpu"), root)
    return EVALS.build({"name": "corruptions", **opts}, "eval.metrics.c", model=model, ds=ds, ctx=ctx)


def clean_acc(model, ds, root) -> float:
    ctx = EvalContext(16, 0, ds.clip, torch.device("cpu"), root)
    return EVALS.build({"name": "clean"}, "eval.metrics.clean", model=model, ds=ds, ctx=ctx)["acc"]


def acc_on(model, ds, x_uint8_chw: torch.Tensor) -> float:
    """Accuracy on given stored images, computed here: decode, model, argmax."""
    with torch.no_grad():
        pred = model(ds.decode(x_uint8_chw)).argmax(1)
    return 100.0 * float((pred == ds.y_test).double().mean())


def write_released(root, names, ys: np.ndarray, blocks: dict) -> None:
    """<root>/CIFAR-10-C/ with files of the released shape ([50000, 32, 32, 3] uint8, sparse: only
    the first rows of each severity block are written) and labels.npy (the test labels, 5 times)."""
    d = root / "CIFAR-10-C"
    d.mkdir(exist_ok=True)
    for name in names:
        arr = np.lib.format.open_memmap(d / f"{name}.npy", mode="w+", dtype=np.uint8, shape=(50000, 32, 32, 3))
        for sev, imgs in blocks.items():
            arr[(sev - 1) * 10000:(sev - 1) * 10000 + len(imgs)] = imgs
        arr.flush()
        del arr
    labels = np.zeros(10000, np.uint8)
    labels[:len(ys)] = ys
    np.save(d / "labels.npy", np.tile(labels, 5))


# ---------------------------------------------------------------------------
# Generated CIFAR-10-C on the cifar10 task


def test_generated_end_to_end(task):
    root, (_, _, xte, _), ds, model = task
    assert clean_acc(model, ds, root) == 100.0  # the memorizer: a clean-accuracy baseline of 100%
    out = run(model, ds, root, suite="cifar10", names=["gaussian_noise", "contrast"])
    assert set(out) == KEYS | {"gaussian_noise", "contrast"}
    assert out["source"] == "generated" and out["n"] == N_TEST
    assert list(out["by_severity"]) == ["gaussian_noise", "contrast"]
    for name in ("gaussian_noise", "contrast"):
        per = out["by_severity"][name]
        assert list(per) == ["1", "2", "3", "4", "5"] and out[name] == pytest.approx(np.mean(list(per.values())))
        # every accuracy recomputed here from the documented recipe: corrupt the uint8 HWC test images with
        # the run's seed, keep uint8, decode with the dataset's standardization
        for sev, acc in per.items():
            x = C.corrupt(xte, name, int(sev), 0, "cifar10")
            assert acc == acc_on(model, ds, chw(x))
    assert out["overall"] == pytest.approx((out["gaussian_noise"] + out["contrast"]) / 2)
    assert out["mce"] == pytest.approx(100 - out["overall"])
    assert out["categories"] == {"noise": out["gaussian_noise"], "digital": out["contrast"]}
    assert not torch.equal(ds.cache[("corrupted", "cifar10", "contrast", 5, 0)], ds.x_test)  # really corrupted
    # seeded: the same seed gives the same numbers (and reuses the cached uint8 sets), another seed other noise
    cached = ds.cache[("corrupted", "cifar10", "gaussian_noise", 5, 0)]
    assert cached.dtype == torch.uint8 and tuple(cached.shape) == (N_TEST, 3, 32, 32)
    assert run(model, ds, root, suite="cifar10", names=["gaussian_noise", "contrast"]) == out
    other = corrupted_test_set(ds, "cifar10", "gaussian_noise", 5, 1)
    assert not torch.equal(other.x_test, cached)


def test_identity_corruption_gives_exactly_the_clean_results(task, monkeypatch):
    root, _, ds, model = task
    monkeypatch.setattr(C, "corrupt", lambda images, name, severity, seed, suite: images.copy())
    c = corrupted_test_set(ds, "cifar10", "fog", 3, 0)
    assert torch.equal(c.x_test, ds.x_test) and torch.equal(c.inputs("test"), ds.inputs("test"))
    assert c.decode is ds.decode and len(ds.x_test) == N_TEST  # the original is unchanged
    out = run(model, ds, root, suite="cifar10", names=["fog", "pixelate"], severities=[1, 5])
    assert all(a == 100.0 for per in out["by_severity"].values() for a in per.values())
    assert out["mce"] == 0.0
    # the same through a whole-batch evaluation and on another data root
    ctx = EvalContext(0, 0, ds.clip, torch.device("cpu"), None)
    assert EVALS.build({"name": "corruptions", "suite": "cifar10", "names": ["fog"]}, "m", model=model, ds=ds,
                       ctx=ctx)["fog"] == 100.0


# ---------------------------------------------------------------------------
# Released CIFAR-10-C files


def test_released_files_are_used_when_present(task):
    root, (_, _, xte, yte), ds, model = task
    black = np.zeros_like(xte)
    write_released(root, ["shot_noise", "zoom_blur"], yte, {1: xte, 2: black, 3: xte[::-1]})
    out = run(model, ds, root, suite="cifar10", names=["shot_noise", "zoom_blur"], severities=[1, 2, 3])
    assert out["source"] == "released" and set(out) == KEYS | {"shot_noise", "zoom_blur"}
    per = out["by_severity"]["zoom_blur"]
    assert per["1"] == 100.0  # severity 1 holds the clean test images: exactly the clean accuracy
    assert per["2"] == acc_on(model, ds, chw(black))
    assert per["3"] == acc_on(model, ds, chw(xte[::-1])) < 100.0  # rows are matched to labels by position
    assert out["categories"] == {"noise": out["shot_noise"], "blur": out["zoom_blur"]}
    # a test subset (first n_test images) reads the first rows of each block
    sub = build(root, n_val=20, n_test=10, augment=False)
    assert run(model, sub, root, suite="cifar10", names=["zoom_blur"], severities=[1])["zoom_blur"] == 100.0
    # forced generation ignores them; datasets other than cifar10 never use them
    assert run(model, ds, root, suite="cifar10", names=["zoom_blur"], source="generated")["source"] == "generated"
    other = Dataset("svhn", ds.x_train, ds.y_train, ds.x_test, ds.y_test, 10, ds.clip, decode=ds.decode)
    assert run(model, other, root, suite="cifar10", names=["zoom_blur"], severities=[1])["source"] == "generated"


def test_released_file_errors(task):
    root, (_, _, xte, yte), ds, model = task
    with pytest.raises(BnrobustError, match=r"source 'released' needs the CIFAR-10-C files in .*CIFAR-10-C/"):
        run(model, ds, root, suite="cifar10", names=["fog"], source="released")
    write_released(root, ["fog"], yte, {1: xte})
    with pytest.raises(BnrobustError, match=r"CIFAR-10-C file .*snow\.npy is missing while .* holds the release's "
                                            r"labels\.npy: add it, or set the metric's source to 'generated'"):
        run(model, ds, root, suite="cifar10", names=["fog", "snow"])
    write_released(root, ["fog"], (yte + 1) % 10, {1: xte})
    with pytest.raises(BnrobustError, match=r"are not the first 30 CIFAR-10 test labels") as e:
        run(model, ds, root, suite="cifar10", names=["fog"], severities=[1])
    assert "\n" not in str(e.value)
    with pytest.raises(BnrobustError, match=r"released files exist only for CIFAR-10-C on the cifar10 dataset"):
        run(model, ds, root, suite="mnist", names=["fog"], source="released")


def test_load_cifar10_c_first_rows(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)
    ys = np.arange(7, dtype=np.uint8)
    write_released(tmp_path, ["fog"], ys, {4: imgs})
    x, y = C.load_cifar10_c(tmp_path, "fog", 4, n=7)
    assert np.array_equal(x, imgs) and np.array_equal(y, ys)
    assert C.load_cifar10_c(tmp_path, "fog", 4, n=0)[0].shape == (0, 32, 32, 3)
    with pytest.raises(BnrobustError, match=r"10,000 images per severity; cannot take the first 10001"):
        C.load_cifar10_c(tmp_path, "fog", 4, n=10001)


# ---------------------------------------------------------------------------
# MNIST-C, other storage, errors


def digits_task():
    x = torch.from_numpy(C.synthetic_digits(24, seed=0)).unsqueeze(1)  # uint8 [24, 1, 28, 28]
    y = torch.arange(24) % 10
    dec = DecodeImages("unit")
    return Dataset("mnist", x, y, x, y, 10, (0.0, 1.0), decode=dec), memorizer(dec(x), y)


def test_mnist_c_numbers_are_those_of_the_float_recipe():
    """MNIST-C as before this metric read uint8 storage: decoded [0, 1] images rounded to uint8,
    corrupted, divided by 255 - the same numbers, and float storage still works."""
    ds, model = digits_task()
    out = run(model, ds, None, suite="mnist", names=["shot_noise", "fog"])
    assert out["source"] == "generated" and list(out["by_severity"]["fog"]) == ["1"] and out["categories"] == {}
    for name in ("shot_noise", "fog"):
        x = C.corrupt(ds.x_test[:, 0].numpy(), name, 1, 0, "mnist")
        ref = accuracy_and_loss(model, torch.from_numpy(x.astype(np.float32) / 255.0).unsqueeze(1), ds.y_test, None,
                                16)[0]
        assert out[name] == ref
    as_float = Dataset("floats", ds.inputs("train"), ds.y_train, ds.inputs("test"), ds.y_test, 10, (0.0, 1.0))
    assert run(model, as_float, None, suite="mnist", names=["shot_noise", "fog"]) == out


def test_errors_are_one_line(task):
    root, _, ds, model = task
    digits, dmodel = digits_task()
    cases = [
        (lambda: run(dmodel, digits, None, suite="cifar10", names=["fog"]),
         r"suite 'cifar10' needs uint8 test images \[N, 3, 32, 32\], dataset mnist stores \[24, 1, 28, 28\]"),
        (lambda: run(model, ds, root, suite="cifar10", names=["zigzag"]), r"unknown CIFAR-10-C corruption 'zigzag'"),
        (lambda: run(dmodel, digits, None, suite="mnist", names=["fog"], severities=[2]),
         r"suite 'mnist' has severities 1, got 2"),
        (lambda: run(model, ds, root, suite="cifar10", severities=[0]), r"severities\.0: Input should be greater"),
        (lambda: run(model, ds, root, suite="cifar10", source="files"), r"source: Input should be 'auto'"),
    ]
    for fn, match in cases:
        with pytest.raises(BnrobustError, match=match) as e:
            fn()
        assert "\n" not in str(e.value)


# ---------------------------------------------------------------------------
# mCE and categories


def test_mean_corruption_error_is_the_papers():
    assert mean_corruption_error({"a": {"1": 90.0, "2": 70.0}, "b": [50.0, 30.0]}) == 40.0
    assert mean_corruption_error({"a": [100.0]}) == 0.0
    # unnormalized: a corruption with more severities weighs more (the mean is over corruption x severity)
    assert mean_corruption_error({"a": [0.0, 0.0, 0.0], "b": [100.0]}) == 75.0
    with pytest.raises(BnrobustError, match="at least one accuracy"):
        mean_corruption_error({})


def test_categories_of_hendrycks_and_dietterich():
    cats = C.CIFAR10_C_CATEGORIES
    assert list(cats) == ["noise", "blur", "weather", "digital", "extra"]
    assert [len(v) for v in cats.values()] == [3, 4, 4, 4, 4]
    members = [n for v in cats.values() for n in v]
    assert sorted(members) == sorted(C.CIFAR10_C_FILES) == sorted(C.CIFAR10_C)
    assert cats["extra"] == ("speckle_noise", "gaussian_blur", "spatter", "saturate")
