"""Published pretrained weights: where the files are, their checks, and loading them.

A weights file is looked up, by its published name, in `--weights DIR` (the CLI puts it in
$BNROBUST_WEIGHTS for the process), then in the torch hub cache ($TORCH_HOME/hub/checkpoints,
TORCH_HOME defaulting to ~/.cache/torch: where torchvision keeps what it downloads), and is
otherwise downloaded from its published URL into the first of those folders, when downloads are
allowed (`bnrobust.data.download_allowed()`). A folder without the published name but with the
same name and another hash suffix (`vgg16_bn-<hex>.pth`: a re-saved copy, or a test's random
checkpoint) is used instead, with a note on stderr. Every file is checked before it is loaded:
its sha256 must start with the hex digits of its name (torch hub's convention and `HASH_REGEX`:
`vgg16_bn-6c64b313.pth`). A missing or corrupt file is a one-line error that says which file
and where to put it.

A model built from published weights is frozen (nothing of it is trained, and attacks need no
weight gradients) and stores nothing in the run store: its config says which checkpoint it was
loaded from, a file whose hash is checked, so `model.pt` of such a run is an empty dict and
`Run.model()` reloads the file. (Unfreeze it and its state dict is complete again.)
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..data.root import download_allowed
from ..errors import BnrobustError

TORCHVISION_URL = "https://download.pytorch.org/models/"
BAGNET_URL = ("https://bitbucket.org/wielandbrendel/bag-of-feature-pretrained-models/raw/"
              "249e8fa82c0913623a807d9d35eeab9da7dcc2a8/")
HASH_REGEX = re.compile(r"-([a-f0-9]+)\.")  # torch hub's: the hash prefix in "name-<sha256 prefix>.pth"


@dataclass(frozen=True)
class WeightsFile:
    """A published checkpoint: its file names (the first is the one downloaded; later ones are
    older names of the same checkpoint that a user may already have) and where it comes from."""
    names: tuple[str, ...]
    base_url: str
    source: str

    @property
    def url(self) -> str:
        return self.base_url + self.names[0]

    def other_copy(self, name: str) -> bool:
        """Whether `name` is this checkpoint's name with another hash suffix (torch hub's naming
        for a re-saved or differently trained copy: `vgg16_bn-<sha256 prefix>.pth`)."""
        return any(re.fullmatch(re.escape(stem) + r"-[a-f0-9]{8,64}" + re.escape(ext), name)
                   for stem, ext in (split_name(n) for n in self.names))


def split_name(name: str) -> tuple[str, str]:
    """("vgg16_bn", ".pth") of "vgg16_bn-6c64b313.pth"."""
    m = re.fullmatch(r"(.+)-[a-f0-9]+(\..+)", name)
    assert m, name
    return m.group(1), m.group(2)


def _tv(*names: str) -> WeightsFile:
    return WeightsFile(names, TORCHVISION_URL, "torchvision")


# torchvision's ImageNet checkpoints (torchvision/models/*.py) and Brendel & Bethge's BagNets
# (github.com/wielandbrendel/bag-of-local-features-models, bagnets/pytorchnet.py).
PUBLISHED: dict[str, WeightsFile] = {
    "vgg11": _tv("vgg11-bbd30ac9.pth"),
    "vgg13": _tv("vgg13-c768596a.pth"),
    "vgg16": _tv("vgg16-397923af.pth"),
    "vgg19": _tv("vgg19-dcbb9e9d.pth"),
    "vgg11_bn": _tv("vgg11_bn-6002323d.pth"),
    "vgg13_bn": _tv("vgg13_bn-abd245e5.pth"),
    "vgg16_bn": _tv("vgg16_bn-6c64b313.pth"),
    "vgg19_bn": _tv("vgg19_bn-c79401a0.pth"),
    "alexnet": _tv("alexnet-owt-7be5be79.pth", "alexnet-owt-4df8aa71.pth"),
    "resnet18": _tv("resnet18-f37072fd.pth", "resnet18-5c106cde.pth"),
    "bagnet9": WeightsFile(("bagnet8-34f4ccd2.pth.tar",), BAGNET_URL, "Brendel & Bethge (2019)"),
    "bagnet17": WeightsFile(("bagnet16-105524de.pth.tar",), BAGNET_URL, "Brendel & Bethge (2019)"),
    "bagnet33": WeightsFile(("bagnet32-2ddd53ed.pth.tar",), BAGNET_URL, "Brendel & Bethge (2019)"),
}


def hub_checkpoints() -> Path:
    """torch hub's cache of downloaded checkpoints: $TORCH_HOME/hub/checkpoints."""
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "torch")
    return Path(home).expanduser() / "hub" / "checkpoints"


def weights_dirs() -> list[Path]:
    """Where weights files are looked for, in order: $BNROBUST_WEIGHTS (--weights), the hub cache."""
    dirs = []
    if os.environ.get("BNROBUST_WEIGHTS"):
        given = Path(os.environ["BNROBUST_WEIGHTS"]).expanduser()
        if not given.is_dir():
            raise BnrobustError(f"--weights {given} is not a folder (give the folder that holds the weights files)")
        dirs.append(given)
    return dirs + [hub_checkpoints()]


def expected_prefix(name: str) -> str:
    m = HASH_REGEX.search(name)
    if m is None:
        raise ValueError(f"weights file name {name!r} carries no hash prefix")
    return m.group(1)


_VERIFIED: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, per process
_NOTED: set[str] = set()


def sha256_of(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _VERIFIED:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        _VERIFIED[key] = h.hexdigest()
    return _VERIFIED[key]


def _put_it(wf: WeightsFile) -> str:
    where = weights_dirs()[0]
    return (f"download {wf.url} ({wf.source}) into {where}/ (or pass --weights DIR, a folder that holds it)")


def check_file(path: Path, wf: WeightsFile) -> None:
    """The file's sha256 starts with the prefix in its name, or a one-line BnrobustError."""
    want = expected_prefix(path.name)
    try:
        digest = sha256_of(path)
    except OSError as e:
        raise BnrobustError(f"cannot read weights file {path}: {e.strerror or e}") from None
    if not digest.startswith(want):
        raise BnrobustError(f"weights file {path} is corrupt or not the published file (sha256 {digest[:12]}..., "
                            f"its name says {want}...): delete it and {_put_it(wf)}")


def _download(wf: WeightsFile, dest_dir: Path) -> Path:
    dest = dest_dir / wf.names[0]
    dest_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=f".{dest.name}.")
    try:
        print(f"bnrobust: downloading {wf.url} to {dest}", file=sys.stderr)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(wf.url, timeout=30) as r:
            shutil.copyfileobj(r, out, 1 << 22)
        digest = sha256_of(Path(tmp))
        if not digest.startswith(expected_prefix(dest.name)):
            raise OSError(f"the download's sha256 {digest[:12]}... does not match {expected_prefix(dest.name)}")
        os.replace(tmp, dest)
        return dest
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def find_weights(key: str) -> Path:
    """The verified local file of published checkpoint `key` (downloading it if allowed)."""
    wf = PUBLISHED[key]
    dirs = weights_dirs()
    for d in dirs:
        for name in wf.names:
            path = d / name
            if path.is_file():
                check_file(path, wf)
                return path
        others = sorted(p for p in (d.iterdir() if d.is_dir() else ()) if wf.other_copy(p.name) and p.is_file())
        if others:  # e.g. a checkpoint re-saved by a newer torchvision, or a test's random one
            check_file(others[0], wf)
            if others[0].name not in _NOTED:
                _NOTED.add(others[0].name)
                print(f"bnrobust: note: using {others[0]}, not the published {wf.names[0]}", file=sys.stderr)
            return others[0]
    if not download_allowed():
        raise BnrobustError(f"weights file {wf.names[0]} not found in {' or '.join(map(str, dirs))}: {_put_it(wf)}")
    try:
        return _download(wf, dirs[0])
    except OSError as e:
        raise BnrobustError(f"weights file {wf.names[0]} not found in {' or '.join(map(str, dirs))} and could not be "
                            f"downloaded ({str(e)[:160]}): {_put_it(wf)}") from None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's state dict (tensors only; nothing else is unpickled)."""
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated, not a torch file, unexpected objects
        raise BnrobustError(f"weights file {path} cannot be loaded ({str(e).splitlines()[0][:120]})") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise BnrobustError(f"weights file {path} holds no state dict of tensors")
    return sd


def load_published(model: nn.Module, key: str) -> nn.Module:
    """Load published checkpoint `key` into `model` (built on any device, e.g. "meta": the
    loaded tensors replace its parameters) with strict name and shape checks; then freeze it
    and keep it out of the run store (see the module docstring)."""
    path = find_weights(key)
    sd = read_state_dict(path)
    try:
        model.load_state_dict({k: v.float().contiguous() if v.is_floating_point() else v for k, v in sd.items()},
                              strict=True, assign=True)
    except RuntimeError as e:
        first = " ".join(str(e).split())[:240]
        raise BnrobustError(f"weights file {path} does not fit the model ({first})") from None
    model.requires_grad_(False)
    _keep_out_of_store(model)
    return model


def _keep_out_of_store(model: nn.Module) -> None:
    keys = set(model.state_dict())
    # BN fills in a missing num_batches_tracked itself (old checkpoints lack it), so it is never "missing"
    required = {k for k in keys if not k.endswith("num_batches_tracked")}

    def save_nothing(module, state_dict, prefix, local_metadata):
        if not any(p.requires_grad for p in module.parameters()):  # still exactly the published file
            for k in [k for k in state_dict if k.startswith(prefix) and k[len(prefix):] in keys]:
                del state_dict[k]

    def accept_nothing(module, incompatible):
        # an empty state dict (what save_nothing stored) keeps the published weights
        if required <= set(incompatible.missing_keys) and not incompatible.unexpected_keys:
            incompatible.missing_keys.clear()

    model.register_state_dict_post_hook(save_nothing)
    model.register_load_state_dict_post_hook(accept_nothing)
