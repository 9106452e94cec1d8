"""The ImageNet validation set reader on tiny synthetic folders in the real formats: both layouts,
every labels source, torchvision's class order and transform, the seeded subset, batch-by-batch
decoding, and one-line errors for a missing class folder, a stray folder, unreadable JPEGs and
missing labels."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

import imagenet_synthetic as S
from bnrobust.data import DATASETS, load_dataset
from bnrobust.data.imagenet import (CLIP, DecodeJpegs, imagenet_dir, list_validation_set, load_image,
                                    read_meta_mat)
from bnrobust.data.imagenet_classes import WNID_INDEX, WNIDS
from bnrobust.errors import BnrobustError

LABELS = ["n02099601", "n01440764", "n15075141", "n02099601", "n04111531", "n01440764"]


def _data(root, **opts):
    return load_dataset({"name": "imagenet", **opts}, seed=0, root=root)


def test_class_list_is_torchvisions():
    # the 1,000 sorted wnids; spot checks against torchvision's indices
    assert len(WNIDS) == 1000 and list(WNIDS) == sorted(WNIDS)
    assert (WNIDS[0], WNIDS[1], WNIDS[207], WNIDS[281], WNIDS[409], WNIDS[954], WNIDS[999]) == (
        "n01440764", "n01443537", "n02099601", "n02123045", "n02708093", "n07753592", "n15075141")
    assert hashlib.md5(("\n".join(WNIDS) + "\n").encode()).hexdigest() == "5ef135d00f8768c0f62853cd9dbc563d"


def test_image_folder_layout(tmp_path):
    S.write_image_folder(tmp_path, {"n01440764": 3, "n15075141": 2, "n02099601": 2})
    paths, labels, layout = list_validation_set(imagenet_dir(tmp_path))
    assert layout.startswith("ImageFolder")
    assert labels.tolist() == [0, 0, 0, 207, 207, 999, 999]  # sorted by class, then file name
    assert [p.split("/")[-2] for p in paths] == ["n01440764"] * 3 + ["n02099601"] * 2 + ["n15075141"] * 2
    # <root> itself may be the imagenet folder
    assert imagenet_dir(tmp_path / "imagenet") == tmp_path / "imagenet"


@pytest.mark.parametrize("how", ["devkit", "txt", "caffe", "csv"])
def test_flat_layout_every_labels_source(tmp_path, how):
    S.write_flat(tmp_path, LABELS, how)
    paths, labels, layout = list_validation_set(imagenet_dir(tmp_path))
    assert layout.startswith("flat")
    assert [p.rsplit("_", 1)[-1] for p in paths] == [f"{k:08d}.JPEG" for k in range(1, 7)]
    assert labels.tolist() == [WNID_INDEX[w] for w in LABELS]


def test_meta_mat_maps_devkit_ids(tmp_path):
    ids = S.synset_ids(seed=3)
    S.write_meta_mat(tmp_path / "meta.mat", ids)
    assert read_meta_mat(tmp_path / "meta.mat") == {i: w for w, i in ids.items()}  # inner nodes left out


def test_dataset_subset_transform_and_batches(tmp_path):
    S.write_image_folder(tmp_path, {"n01440764": 3, "n15075141": 2, "n02099601": 2})
    ds = _data(tmp_path, size=32, resize=40)
    assert (ds.num_classes, ds.clip, ds.input_shape) == (1000, CLIP, (3, 32, 32))
    assert len(ds.x_train) == 0 and len(ds.x_test) == 7
    assert sorted(ds.y_test.tolist()) == [0, 0, 0, 207, 207, 999, 999]
    # a seeded permutation: the same for the same seed, its first n a subset of the same images
    sub = _data(tmp_path, size=32, resize=40, n_test=3)
    assert sub.x_test.tolist() == ds.x_test[:3].tolist() and sub.y_test.tolist() == ds.y_test[:3].tolist()
    assert load_dataset({"name": "imagenet", "size": 32, "resize": 40}, seed=1, root=tmp_path).x_test.tolist() \
        != ds.x_test.tolist()
    # decoded batch by batch: the stored test split is file indices; decode reads only the batch
    calls = []
    dec = ds.decode
    ds.decode = lambda idx: calls.append(len(idx)) or dec(idx)
    xs = [xb for xb, _ in ds.batches("test", 3)]
    assert calls == [3, 3, 1] and all(x.dtype == torch.float32 and x.shape[1:] == (3, 32, 32) for x in xs)
    # the ImageNet normalization: (x / 255 - mean) / std
    paths, _, _ = list_validation_set(imagenet_dir(tmp_path))
    raw = torch.from_numpy(load_image(paths[int(ds.x_test[0])], 40, 32)).permute(2, 0, 1).double() / 255
    want = (raw - torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1).double()) / \
        torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1).double()
    assert torch.allclose(xs[0][0].double(), want, atol=1e-6)


def test_torchvision_transform_geometry(tmp_path):
    """Resize(256) scales the short side to 256 and the long side to int(256 * long / short);
    CenterCrop(224) offsets are int(round((side - 224) / 2)). A 4-colour quadrant image shows
    the crop: each corner of the output keeps its quadrant's colour."""
    from PIL import Image
    quad = np.zeros((300, 500, 3), np.uint8)
    quad[:150, :250], quad[:150, 250:], quad[150:, :250], quad[150:, 250:] = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)
    path = tmp_path / "q.png"
    Image.fromarray(quad).save(path)
    out = load_image(str(path), 256, 224)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    assert out[0, 0].tolist() == [255, 0, 0] and out[0, -1].tolist() == [0, 255, 0]
    assert out[-1, 0].tolist() == [0, 0, 255] and out[-1, -1].tolist() == [255, 255, 255]
    # the same as doing torchvision's steps by hand with PIL: 500x300 -> 426x256, crop at (101, 16)
    im = Image.fromarray(quad).resize((426, 256), Image.Resampling.BILINEAR).crop((101, 16, 325, 240))
    assert np.array_equal(out, np.asarray(im))
    gray = tmp_path / "g.jpg"
    Image.fromarray(quad[..., 0]).save(gray)  # grayscale JPEG -> 3 channels, as ImageFolder's loader
    assert load_image(str(gray), 256, 224).shape == (224, 224, 3)


def test_missing_class_folder_is_one_line(tmp_path):
    S.write_image_folder(tmp_path, {"n01440764": 2})
    (tmp_path / "imagenet" / "val" / "n04111531").rmdir()
    with pytest.raises(BnrobustError, match=r"^ImageNet class folder .*/val/n04111531 is missing \(1 of the 1,000 "
                                            r"class folders missing\)") as e:
        _data(tmp_path)
    assert "\n" not in str(e.value)


def test_stray_folder_is_one_line(tmp_path):
    S.write_image_folder(tmp_path, {"n01440764": 2})
    (tmp_path / "imagenet" / "val" / "n99999999").mkdir()
    with pytest.raises(BnrobustError, match="n99999999 is not one of the 1,000 ILSVRC2012 class folders"):
        _data(tmp_path)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_unreadable_jpeg_is_one_line(tmp_path, damage):
    S.write_image_folder(tmp_path, {"n01440764": 2, "n02099601": 2})
    bad = tmp_path / "imagenet" / "val" / "n02099601" / "ILSVRC2012_val_00000003.JPEG"
    data = bad.read_bytes()
    bad.write_bytes({"garbage": b"not a jpeg at all", "truncated": data[: len(data) // 2], "empty": b""}[damage])
    with pytest.raises(BnrobustError, match=r"^cannot read ImageNet image .*ILSVRC2012_val_00000003.JPEG \(.+\): "
                                            r"replace it with the original file$") as e:
        _data(tmp_path)
    assert "\n" not in str(e.value)


def test_missing_labels_and_data_are_one_line(tmp_path):
    with pytest.raises(BnrobustError, match=r"^ImageNet validation set not found under .*: put the ILSVRC2012 "
                                            r"validation images in .*imagenet/val/"):
        _data(tmp_path)
    S.write_flat(tmp_path, LABELS, "none")
    with pytest.raises(BnrobustError, match=r"^no labels for the ImageNet images in .*: put the devkit's meta.mat "
                                            r"and ILSVRC2012_validation_ground_truth.txt in"):
        _data(tmp_path)
    (tmp_path / "imagenet" / "val.txt").write_text("ILSVRC2012_val_00000001.JPEG 3\n")
    with pytest.raises(BnrobustError, match=r"labels file .*val.txt has no label for ILSVRC2012_val_00000002.JPEG "
                                            r"\(5 images are unlabelled\)"):
        _data(tmp_path)
    (tmp_path / "imagenet" / "val.txt").write_text("ILSVRC2012_val_00000001.JPEG cat\n")
    with pytest.raises(BnrobustError, match="line 1: 'cat' is neither an ILSVRC2012 wnid nor a class index 0..999"):
        _data(tmp_path)


def test_bad_devkit_files_are_one_line(tmp_path):
    S.write_flat(tmp_path, LABELS, "devkit")
    data = tmp_path / "imagenet" / "ILSVRC2012_devkit_t12" / "data"
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text("1\n2\n")
    with pytest.raises(BnrobustError, match="has 2 lines, but val/ holds image number 3"):
        _data(tmp_path)
    (data / "meta.mat").write_bytes(b"MATLAB 5.0 nonsense")
    with pytest.raises(BnrobustError, match=r"meta.mat is not the devkit's meta.mat"):
        _data(tmp_path)


def test_options_are_checked(tmp_path):
    S.write_image_folder(tmp_path, {"n01440764": 2})
    with pytest.raises(BnrobustError, match=r"data.n_test must be at most 2 \(the images in"):
        _data(tmp_path, n_test=5)
    with pytest.raises(BnrobustError, match="data.resize must be >= data.size"):
        _data(tmp_path, size=64, resize=32)
    assert DATASETS.resolve({"name": "imagenet"}) == {"name": "imagenet", "n_test": None, "size": 224, "resize": 256}


def test_decode_on_empty_and_repr(tmp_path):
    S.write_image_folder(tmp_path, {"n01440764": 1})
    paths, _, _ = list_validation_set(imagenet_dir(tmp_path))
    dec = DecodeJpegs(paths, 32, 36)
    assert dec(torch.zeros(0, dtype=torch.long)).shape == (0, 3, 32, 32)
    assert repr(dec) == "DecodeJpegs(1 files, resize 36, crop 32)"
