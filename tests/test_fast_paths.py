"""The switches of the GPU training path, run on the CPU (PyTorch runs them there too): bf16
autocast, channels_last and torch.compile each still train the model, close to plain fp32;
and the host-sync-free pieces (evaluation sums on the device, exact uint8 decoding by
division, asynchronous copies, the validation batch size) give the same numbers as before."""
import numpy as np
import pytest
import torch
from torch import nn

from bnrobust.data import Dataset
from bnrobust.data.transforms import DecodeImages
from bnrobust.eval.measure import evaluate
from bnrobust.models.lenet import LeNet5
from bnrobust.runner.device import to_device
from bnrobust.train import TrainConfig, train
from bnrobust.train.trainer import _val_batch


@pytest.fixture(scope="module")
def squares() -> Dataset:
    """1x8x8 uint8 images: a bright 3x3 square top-left (class 1) or bottom-right (class 0) on noise."""
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (256,), generator=g)
    x = torch.randint(0, 80, (256, 1, 8, 8), generator=g, dtype=torch.uint8)
    for i, c in enumerate(y.tolist()):
        r = slice(0, 3) if c else slice(5, 8)
        x[i, 0, r, r] = 230
    return Dataset("squares", x, y, x[:64], y[:64], 2, (0.0, 1.0), decode=DecodeImages("unit"))


def _train(ds: Dataset, **kw) -> tuple[nn.Module, list[dict]]:
    torch.manual_seed(0)
    model = LeNet5(1, 2, 8, norm="bn")
    channels_last = kw.pop("channels_last", False)  # the reference: NCHW
    result = train(model, ds, TrainConfig(lr=0.05, epochs=3, batch_size=32, momentum=0.9, **kw), 0,
                   channels_last=channels_last)
    assert result.status == "ok"
    return model, result.history


def _rel_diff(a: nn.Module, b: nn.Module) -> float:
    pa = torch.cat([p.detach().flatten() for p in a.parameters()])
    pb = torch.cat([p.detach().flatten() for p in b.parameters()])
    return float((pa - pb).norm() / pb.norm())


@pytest.fixture(scope="module")
def fp32(squares):
    return _train(squares, precision="fp32")


def test_fp32_reference_learns(fp32):
    assert fp32[1][-1]["acc"] > 95


def test_bf16_autocast_on_cpu(squares, fp32):
    model, history = _train(squares, precision="bf16")
    assert history[-1]["acc"] > 95                 # still learns
    assert 0 < _rel_diff(model, fp32[0]) < 0.05    # ran in bf16 (not the same bits), close to fp32
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast: fp32 master weights


def test_channels_last_on_cpu(squares, fp32):
    """NHWC is the default on every device (faster convolutions on the CPU too)."""
    seen = []
    torch.manual_seed(0)
    probe = LeNet5(1, 2, 8, norm="bn")
    probe.features[0].register_forward_pre_hook(
        lambda m, inp: seen.append(inp[0].is_contiguous(memory_format=torch.channels_last)))
    train(probe, squares, TrainConfig(lr=0.05, epochs=1, batch_size=32, momentum=0.9, precision="fp32"), 0)
    assert seen and all(seen)  # every batch reached the first convolution as NHWC
    assert probe.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    model, history = _train(squares, precision="fp32", channels_last=True)
    assert history[-1]["acc"] > 95
    assert _rel_diff(model, fp32[0]) < 1e-4  # same arithmetic up to float rounding


def test_compile_on_cpu(squares, fp32, monkeypatch):
    """torch.compile with dynamo's eager backend: the trainer's compile path (graph capture,
    gradients reaching the uncompiled model's parameters) in seconds; the default inductor
    backend adds C++ code generation, ~100 s on a busy 2-core machine, too slow for the suite."""
    pytest.importorskip("torch._dynamo", reason="torch.compile is not available in this torch build")
    real, calls = torch.compile, []

    def spy(model, **kw):
        calls.append(model)
        return real(model, backend="eager", **kw)
    monkeypatch.setattr(torch, "compile", spy)
    torch._dynamo.reset()
    try:
        model, history = _train(squares, precision="fp32", compile=True)
    except Exception as e:  # noqa: BLE001 - a platform dynamo does not support
        pytest.skip(f"torch.compile does not work here: {type(e).__name__}: {e}")
    assert len(calls) == 1
    assert history[-1]["acc"] > 95
    assert _rel_diff(model, fp32[0]) < 1e-5
    # the whole GPU recipe at once: compile + bf16 autocast + channels_last
    model, history = _train(squares, precision="bf16", compile=True, channels_last=True)
    assert history[-1]["acc"] > 95 and _rel_diff(model, fp32[0]) < 0.05


def test_evaluate_sums_on_the_device_like_python(squares):
    torch.manual_seed(0)
    model = LeNet5(1, 2, 8, norm="bn").eval()
    batches = list(squares.batches("train", 50))
    acc, loss = evaluate(model, batches)
    correct, total = 0, 0.0
    with torch.no_grad():
        for xb, yb in batches:  # the per-batch host sums evaluate used to do
            out = model(xb)
            correct += int((out.argmax(1) == yb).sum())
            total += float(nn.functional.cross_entropy(out, yb, reduction="sum"))
    assert acc == 100.0 * correct / 256 and loss == total / 256  # the same bits


def test_decode_by_division_is_the_lookup():
    values = torch.arange(256).to(torch.uint8)
    lut = torch.from_numpy(np.arange(256, dtype=np.uint8).astype(np.float32) / 255.0)
    dec = DecodeImages("unit")
    x = values[torch.randperm(256)].repeat(3).view(3, 1, 16, 16)
    assert torch.equal(dec(x), lut[x.long()])
    assert dec._tensors(torch.device("cpu"))[3]  # the CPU divides exactly: the fast path is taken


def test_to_device_and_validation_batch():
    t = torch.arange(5)
    assert to_device(t, "cpu") is t
    if torch.cuda.is_available():  # the asynchronous path
        assert torch.equal(to_device(t, "cuda").cpu(), t)
    tracked = LeNet5(1, 2, 8, norm="bn")
    batch_stats = LeNet5(1, 2, 8, norm={"name": "bn", "stats": "batch"})
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert _val_batch(128, cpu, tracked) == 500 and _val_batch(1000, cpu, tracked) == 1000
    assert _val_batch(128, gpu, tracked) == 4096
    assert _val_batch(128, gpu, batch_stats) == 500  # the batch is part of its result: unchanged
