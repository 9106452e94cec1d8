"""Tiny stand-ins, in the exact formats, for what a user of `imagenet-pretrained` supplies: the
ILSVRC2012 validation set (ImageFolder layout, or flat files with the devkit's meta.mat and
ground truth, or with a labels file) and published checkpoints (torchvision's parameter names,
hash-named files). Nothing here is real data: images are smooth random colours, weights random."""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import torch

from bnrobust.data.imagenet_classes import WNIDS
from bnrobust.models import MODELS
from bnrobust.models.weights import PUBLISHED, split_name

SIZES = [(40, 30), (30, 44), (36, 36), (50, 28)]  # (w, h): landscape, portrait, square


def jpeg_bytes(rng: np.random.Generator, size: tuple[int, int], mode: str = "RGB") -> bytes:
    from PIL import Image
    w, h = size
    base = rng.integers(0, 256, (3, 3, 3)).astype(np.uint8)  # a smooth image: upsampled 3x3 colours
    img = Image.fromarray(base).resize((w, h), Image.BILINEAR).convert(mode)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def write_image_folder(root: Path, per_class: dict[str, int], seed: int = 0) -> Path:
    """<root>/imagenet/val/<wnid>/*.JPEG: all 1,000 class folders, images in the given ones."""
    rng = np.random.default_rng(seed)
    val = root / "imagenet" / "val"
    k = 0
    for wnid in WNIDS:
        (val / wnid).mkdir(parents=True)
        for _ in range(per_class.get(wnid, 0)):
            k += 1
            mode = "L" if k % 5 == 0 else "RGB"  # ImageNet has some grayscale JPEGs
            (val / wnid / f"ILSVRC2012_val_{k:08d}.JPEG").write_bytes(jpeg_bytes(rng, SIZES[k % len(SIZES)], mode))
    return root


def synset_ids(seed: int = 0) -> dict[str, int]:
    """wnid -> ILSVRC2012_ID: a permutation of 1..1000 (the devkit's ids are not in wnid order)."""
    perm = np.random.default_rng(seed).permutation(1000) + 1
    return {w: int(i) for w, i in zip(WNIDS, perm)}


def write_meta_mat(path: Path, ids: dict[str, int]) -> None:
    """The devkit's data/meta.mat: a struct array `synsets` (ILSVRC2012_ID, WNID, words, gloss,
    num_children, wordnet_height, num_train_images), the 1,000 leaves plus inner nodes."""
    import scipy.io
    fields = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("gloss", "O"), ("num_children", "O"),
              ("wordnet_height", "O"), ("num_train_images", "O")]
    rows = [(i, w, f"class {w}", "a gloss", 0, 0, 1300) for w, i in ids.items()]
    rows += [(1000 + j, f"n9999999{j}", "inner node", "", 3, 1, 0) for j in range(5)]  # num_children > 0
    arr = np.zeros((len(rows), 1), dtype=fields)
    for k, row in enumerate(rows):
        for (name, _), value in zip(fields, row):
            arr[k, 0][name] = np.array(value) if not isinstance(value, str) else value
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {"synsets": arr})


def write_flat(root: Path, labels: list[str], labels_as: str = "devkit", seed: int = 0) -> Path:
    """<root>/imagenet/val/ILSVRC2012_val_%08d.JPEG with class labels[i] (wnids) for image i+1,
    labelled by the devkit ("devkit"), a val_labels.txt with wnids ("txt"), Caffe's val.txt with
    class indices ("caffe") or Kaggle's LOC_val_solution.csv ("csv")."""
    rng = np.random.default_rng(seed)
    imdir = root / "imagenet"
    (imdir / "val").mkdir(parents=True)
    names = [f"ILSVRC2012_val_{k + 1:08d}.JPEG" for k in range(len(labels))]
    for k, name in enumerate(names):
        (imdir / "val" / name).write_bytes(jpeg_bytes(rng, SIZES[k % len(SIZES)]))
    if labels_as == "devkit":
        ids = synset_ids(seed)
        data = imdir / "ILSVRC2012_devkit_t12" / "data"
        write_meta_mat(data / "meta.mat", ids)
        (data / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{ids[w]}\n" for w in labels))
    elif labels_as == "txt":
        (imdir / "val_labels.txt").write_text("".join(f"{n} {w}\n" for n, w in zip(names, labels)))
    elif labels_as == "caffe":
        (imdir / "val.txt").write_text("".join(f"{n} {WNIDS.index(w)}\n" for n, w in zip(names, labels)))
    elif labels_as == "csv":
        (imdir / "LOC_val_solution.csv").write_text(
            "ImageId,PredictionString\n" + "".join(f"{Path(n).stem},{w} 1 2 30 40 {w} 3 4 20 20\n"
                                                   for n, w in zip(names, labels)))
    return root


# ---------------------------------------------------------------------------
# Checkpoints

MODEL_OF = {  # published key -> (MODELS name, norm)
    **{f"vgg{d}{s}": (f"imagenet-vgg{d}", "bn" if s else "none") for d in (11, 13, 16, 19) for s in ("", "_bn")},
    "alexnet": ("imagenet-alexnet", "none"), "resnet18": ("imagenet-resnet18", "bn"),
    "bagnet9": ("bagnet9", "bn"), "bagnet17": ("bagnet17", "bn"), "bagnet33": ("bagnet33", "bn"),
}


class _Shape:
    """A dataset stand-in for building an architecture: 1,000 classes, 3 x 64 x 64 inputs."""
    name, num_classes, input_shape = "stand-in", 1000, (3, 64, 64)


def architecture(key: str) -> torch.nn.Module:
    """The randomly initialized architecture of published checkpoint `key` (on the meta device:
    names and shapes only)."""
    name, norm = MODEL_OF[key]
    with torch.device("meta"):
        return MODELS.build({"name": name, "norm": norm, "weights": "random"}, dataset=_Shape())


def random_state_dict(key: str, seed: int = 0, old_format: bool = False) -> dict[str, torch.Tensor]:
    """A random state dict with the parameter names and shapes of checkpoint `key`. To keep the
    files small (VGG's are 500 MB), a weight of shape [out, in, ...] is one random number per output
    unit, broadcast (stride 0) over the rest: torch.save stores only those numbers. old_format drops
    BN's num_batches_tracked, as in torchvision's checkpoints of 2017-2019."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, t in architecture(key).state_dict().items():
        if name.endswith("num_batches_tracked"):
            if not old_format:
                out[name] = torch.tensor(0)
            continue
        if name.endswith("running_var"):
            out[name] = 0.5 + torch.rand(t.shape, generator=g)
        elif t.dim() >= 2:
            fan_in = t[0].numel()
            col = torch.randn(t.shape[0], *[1] * (t.dim() - 1), generator=g) * (2.0 / fan_in)
            out[name] = col.expand(t.shape)
        else:
            out[name] = 0.1 * torch.randn(t.shape, generator=g)
    return out


def save_hash_named(sd: dict, folder: Path, stem_of: str) -> Path:
    """Save under torch hub's naming: the published file's stem, '-', the first 8 hex digits of
    the file's own sha256, its extension (vgg16_bn-<hash>.pth)."""
    buf = io.BytesIO()
    torch.save(sd, buf)
    data = buf.getvalue()
    stem, ext = split_name(stem_of)
    path = folder / f"{stem}-{hashlib.sha256(data).hexdigest()[:8]}{ext}"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def write_checkpoints(folder: Path, keys=None, seed: int = 0) -> dict[str, Path]:
    """Random hash-named checkpoints of the published keys (default: all) in `folder`."""
    out = {}
    for i, key in enumerate(keys or MODEL_OF):
        out[key] = save_hash_named(random_state_dict(key, seed + i, old_format=i % 2 == 0), folder,
                                   PUBLISHED[key].names[0])
    return out
