"""The ImageNet models and their published weights, without torchvision and without the real
files: torchvision's parameter counts and names, strict loading of hash-named checkpoints of every
model, the hash check, where files are looked for, the (offline) download path, BagNets' patch
size, and the frozen models' empty run-store copy."""
from __future__ import annotations

import io
import os

import pytest
import torch

import imagenet_synthetic as S
from bnrobust.errors import BnrobustError
from bnrobust.models import MODELS, build_model
from bnrobust.models import weights as W
from bnrobust.models.bagnet import BagNet
from bnrobust.models.imagenet import VGG

# torchvision's documented parameter counts (torchvision.models weights tables, "num_params")
TORCHVISION_PARAMS = {"vgg11": 132863336, "vgg11_bn": 132868840, "vgg13": 133047848, "vgg13_bn": 133053736,
                      "vgg16": 138357544, "vgg16_bn": 138365992, "vgg19": 143667240, "vgg19_bn": 143678248,
                      "alexnet": 61100840, "resnet18": 11689512}
# a few of torchvision's state-dict names per checkpoint (its Sequential indices, downsample, fc)
TORCHVISION_NAMES = {
    "vgg16": ["features.0.weight", "features.28.bias", "classifier.0.weight", "classifier.3.weight", "classifier.6.bias"],
    "vgg16_bn": ["features.1.running_mean", "features.40.weight", "features.41.running_var", "classifier.6.weight"],
    "vgg11": ["features.18.weight", "classifier.6.weight"],
    "vgg19_bn": ["features.49.weight", "features.50.running_var"],
    "alexnet": ["features.0.weight", "features.3.weight", "features.6.weight", "features.8.weight", "features.10.bias",
                "classifier.1.weight", "classifier.4.weight", "classifier.6.bias"],
    "resnet18": ["conv1.weight", "bn1.running_mean", "layer1.1.conv2.weight", "layer2.0.downsample.0.weight",
                 "layer2.0.downsample.1.running_var", "layer4.1.bn2.weight", "fc.bias"],
    "bagnet33": ["conv1.weight", "conv2.weight", "bn1.running_var", "layer1.0.downsample.0.weight",
                 "layer1.0.downsample.1.weight", "layer3.5.conv3.weight", "layer4.2.bn3.running_mean", "fc.weight"],
}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    return folder, S.write_checkpoints(folder)


@pytest.fixture
def weights_dir(ckpts, monkeypatch, tmp_path):
    monkeypatch.setenv("BNROBUST_WEIGHTS", str(ckpts[0]))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # never the user's real hub cache
    return ckpts[0]


def _build(key: str, **opts) -> torch.nn.Module:
    name, norm = S.MODEL_OF[key]
    return build_model({"name": name, "norm": norm, **opts}, S._Shape())


def test_parameter_counts_and_names_are_torchvisions():
    for key, count in TORCHVISION_PARAMS.items():
        assert sum(p.numel() for p in S.architecture(key).parameters()) == count, key
    for key, names in TORCHVISION_NAMES.items():
        keys = set(S.architecture(key).state_dict())
        assert set(names) <= keys, (key, set(names) - keys)
    plain = set(S.architecture("vgg16").state_dict())
    assert not any("running" in k for k in plain) and "features.29.weight" not in plain  # no Identity layers


def test_every_checkpoint_loads_strictly(weights_dir, ckpts):
    for key, path in ckpts[1].items():
        model = _build(key)
        saved = torch.load(path, weights_only=True)
        own = dict(model.named_parameters()) | dict(model.named_buffers())
        assert set(saved) <= set(own) and set(own) - set(saved) <= {k for k in own if k.endswith("num_batches_tracked")}
        for name, t in saved.items():
            assert torch.equal(own[name], t), (key, name)
        assert own[next(iter(saved))].device.type == "cpu" and all(t.is_contiguous() for t in own.values())


def test_models_classify_1000_classes_at_224():
    x = torch.empty(2, 3, 224, 224, device="meta")  # shapes only: no compute, no memory
    for key in S.MODEL_OF:
        assert tuple(S.architecture(key)(x).shape) == (2, 1000), key


@pytest.mark.parametrize("q", [9, 17, 33])
def test_bagnet_sees_q_by_q_patches(q):
    """The top-left output unit of layer4 depends on the top-left q x q pixels and nothing else."""
    torch.manual_seed(0)
    net = BagNet(q).eval().double()

    def corner(x):
        x = net.relu(net.bn1(net.conv2(net.conv1(x))))
        return net.layer4(net.layer3(net.layer2(net.layer1(x))))[:, :, 0, 0]

    x = torch.randn(1, 3, 72, 72, dtype=torch.double)
    base = corner(x)
    inside, outside = x.clone(), x.clone()
    inside[:, :, q - 1, q - 1] += 1.0
    outside[:, :, q, :q] += 1.0
    outside[:, :, :q, q] += 1.0
    with torch.no_grad():
        assert not torch.allclose(corner(inside), base)
        assert torch.equal(corner(outside), base)


def test_published_models_are_frozen_and_stored_as_nothing(weights_dir):
    model = _build("resnet18")
    assert not any(p.requires_grad for p in model.parameters())
    assert model.state_dict() == {}  # the run store keeps no copy of the published file
    before = {k: v.clone() for k, v in model.named_parameters()}
    model.load_state_dict({})  # what Run.model() does with that empty copy: keeps the published weights
    assert all(torch.equal(before[k], v) for k, v in model.named_parameters())
    with pytest.raises(RuntimeError, match="Missing key"):
        model.load_state_dict({"fc.bias": torch.zeros(1000)})
    model.requires_grad_(True)  # unfrozen (e.g. fine-tuned): the state dict is complete again
    assert len(model.state_dict()) == len(S.architecture("resnet18").state_dict())


def test_random_weights_and_norm_options(weights_dir):
    torch.manual_seed(0)
    m = _build("vgg11", weights="random")
    assert any(p.requires_grad for p in m.parameters()) and len(m.state_dict()) == 22
    gn = build_model({"name": "imagenet-vgg11", "norm": "gn", "weights": "random"}, S._Shape())
    assert isinstance(gn.features[1], torch.nn.GroupNorm)
    with pytest.raises(BnrobustError, match=r"^model.norm: no published vgg11 weights with norm 'gn'"):
        build_model({"name": "imagenet-vgg11", "norm": "gn"}, S._Shape())
    with pytest.raises(BnrobustError, match="no published vgg11 weights with norm 'bn' and these options"):
        build_model({"name": "imagenet-vgg11", "norm": {"name": "bn", "c": 1e-3}}, S._Shape())
    with pytest.raises(BnrobustError, match="no published resnet18 weights with norm 'none'"):
        build_model({"name": "imagenet-resnet18", "norm": "none"}, S._Shape())


def test_wrong_hash_is_one_line(ckpts, monkeypatch, tmp_path):
    monkeypatch.setenv("BNROBUST_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    good = ckpts[1]["vgg11_bn"]
    (tmp_path / "vgg11_bn-0123abcd.pth").write_bytes(good.read_bytes())
    with pytest.raises(BnrobustError) as e:
        _build("vgg11_bn")
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"weights file {tmp_path}/vgg11_bn-0123abcd.pth is corrupt or not the published file "
                          f"(sha256 {W.sha256_of(good)[:12]}..., its name says 0123abcd...): delete it and download "
                          f"https://download.pytorch.org/models/vgg11_bn-6002323d.pth (torchvision) into {tmp_path}/")
    # a file under the published name is checked too, and never passed over for another copy
    (tmp_path / "vgg11_bn-0123abcd.pth").unlink()
    (tmp_path / "vgg11_bn-6002323d.pth").write_bytes(good.read_bytes())
    (tmp_path / good.name).write_bytes(good.read_bytes())
    with pytest.raises(BnrobustError, match=r"vgg11_bn-6002323d.pth is corrupt or not the published file"):
        _build("vgg11_bn")


def test_missing_weights_say_which_file_and_where(monkeypatch, tmp_path):
    monkeypatch.setenv("BNROBUST_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    with pytest.raises(BnrobustError) as e:
        _build("bagnet17")
    assert str(e.value) == (
        f"weights file bagnet16-105524de.pth.tar not found in {tmp_path} or {tmp_path}/th/hub/checkpoints: download "
        f"{W.BAGNET_URL}bagnet16-105524de.pth.tar (Brendel & Bethge (2019)) into {tmp_path}/ (or pass --weights DIR, "
        "a folder that holds it)")
    monkeypatch.setenv("BNROBUST_WEIGHTS", str(tmp_path / "nope"))
    with pytest.raises(BnrobustError, match=r"^--weights .*/nope is not a folder"):
        _build("bagnet17")


def test_torch_hub_cache_is_searched(ckpts, monkeypatch, tmp_path):
    monkeypatch.delenv("BNROBUST_WEIGHTS", raising=False)
    hub = tmp_path / "th" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    src = ckpts[1]["alexnet"]
    (hub / src.name).write_bytes(src.read_bytes())
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    assert W.find_weights("alexnet") == hub / src.name
    assert _build("alexnet").features[0].weight.shape == (64, 3, 11, 11)


def test_download_is_verified(ckpts, monkeypatch, tmp_path):
    """The download path, offline: a served file is saved only if its sha256 matches its name."""
    monkeypatch.setenv("BNROBUST_NO_DOWNLOAD", "0")
    monkeypatch.setenv("BNROBUST_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    src = ckpts[1]["resnet18"]
    served = []

    def urlopen(url, timeout=None):
        served.append(url)
        return io.BytesIO(src.read_bytes())
    monkeypatch.setattr(W.urllib.request, "urlopen", urlopen)
    with pytest.raises(BnrobustError, match=r"resnet18-f37072fd.pth not found in .* and could not be downloaded "
                                            r"\(the download's sha256 .* does not match f37072fd\)"):
        _build("resnet18")
    assert served == ["https://download.pytorch.org/models/resnet18-f37072fd.pth"]
    assert os.listdir(tmp_path) == []  # nothing half-written left behind
    monkeypatch.setitem(W.PUBLISHED, "resnet18", W.WeightsFile((src.name,), "https://example.invalid/", "test"))
    assert _build("resnet18").fc.weight.shape == (1000, 512)
    assert (tmp_path / src.name).read_bytes() == src.read_bytes()


def test_names_and_urls_of_published_files():
    assert W.PUBLISHED["vgg16_bn"].url == "https://download.pytorch.org/models/vgg16_bn-6c64b313.pth"
    assert W.PUBLISHED["bagnet33"].url.endswith("/249e8fa82c0913623a807d9d35eeab9da7dcc2a8/bagnet32-2ddd53ed.pth.tar")
    assert W.expected_prefix("alexnet-owt-7be5be79.pth") == "7be5be79"
    assert W.expected_prefix("bagnet8-34f4ccd2.pth.tar") == "34f4ccd2"
    assert W.PUBLISHED["resnet18"].other_copy("resnet18-5c106cde.pth")
    assert not W.PUBLISHED["vgg16"].other_copy("vgg16_bn-6c64b313.pth")
    assert sorted(MODELS.resolve({"name": "imagenet-vgg16"})) == ["name", "norm", "weights"]
    assert len(VGG(11, init=False).features) == 21  # torchvision's vgg11: 8 x (conv, relu) + 5 pools


@pytest.mark.parametrize("norm", ["none", "bn", "gn", "ln"])
def test_every_norm_builds_with_random_weights(norm):
    """With weights=random every architecture takes any norm (names then differ from torchvision's
    only where a norm layer is added or changed); shapes checked on the meta device."""
    x = torch.empty(2, 3, 224, 224, device="meta")
    for name in ["imagenet-vgg11", "imagenet-alexnet", "imagenet-resnet18", "bagnet9"]:
        with torch.device("meta"):
            model = build_model({"name": name, "norm": norm, "weights": "random"}, S._Shape())
        assert tuple(model(x).shape) == (2, 1000), (name, norm)
        has_norm = any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm)) for m in model.modules())
        assert has_norm == (norm != "none"), (name, norm)
