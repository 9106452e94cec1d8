"""`bnrobust run imagenet-pretrained --data-dir X --weights Y` end to end on a tiny synthetic
ImageNet (a few JPEGs over a few classes, all 1,000 class folders) and random hash-named
checkpoints of all 13 models; and the one-line errors, with nothing written, for a checkpoint
with a wrong hash, a missing class folder and an unreadable JPEG. Images are cropped to 64 x 64
(`data.size`) so that the 13 models run in seconds on a CPU."""
from __future__ import annotations

import csv
import shutil

import pytest
import torch

import imagenet_synthetic as S
from bnrobust.cli import main
from bnrobust.experiments import get_experiment
from bnrobust.runner.sweep import load_results

SMALL = ["--set", "data.n_test=4", "--set", "data.size=64", "--set", "data.resize=73", "--device", "cpu"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet")
    S.write_image_folder(root / "data", {"n01440764": 2, "n02099601": 2, "n15075141": 2})
    S.write_checkpoints(root / "weights")
    return root


@pytest.fixture
def env(monkeypatch, tmp_path):
    monkeypatch.delenv("BNROBUST_WEIGHTS", raising=False)  # main() sets it from --weights
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-torch-home"))


def _run(files, out, *extra, data="data", weights="weights"):
    return main(["run", "imagenet-pretrained", "--data-dir", str(files / data), "--weights", str(files / weights),
                 "--out", str(out), *SMALL, *extra])


def test_run_end_to_end(files, env, tmp_path, capsys):
    out = tmp_path / "results"
    assert _run(files, out) == 0
    rep = out / "imagenet-pretrained" / "quick"
    md = (rep / "report.md").read_text()
    assert "13 of 13 runs finished" in md
    assert "| VGG11 BN | 1 |" in md and "| BagNet-33 | 1 |" in md
    assert "Clean top-5 (paper, reference)" in md and "| 89.81 |" in md and "| 24.34 |" in md  # Table 5 values
    assert "BN lowers PGD top-5 accuracy at every VGG depth" in md
    assert "Examples from a BN source transfer worse to a plain target" in md
    assert "![table12_transfer](table12_transfer.png)" in md and (rep / "table12_transfer.png").stat().st_size > 0
    t12 = (rep / "table12_transfer.md").read_text()
    assert "| VGG11 BN | " in t12 and "VGG19 BN (paper, reference)" in t12 and "| 58.8 |" in t12 and "| 88.1 |" in t12
    rows = list(csv.DictReader(open(rep / "results.csv")))
    assert len(rows) == 13 and all(r["status"] == "ok" for r in rows)
    vgg11 = next(r for r in rows if r["variant"] == "VGG11")
    assert {"clean.top1", "clean.top5", "noise.top5", "pgd.top1", "transfer.VGG19 BN.top5"} <= set(vgg11)
    assert next(r for r in rows if r["variant"] == "VGG13")["transfer.VGG11.top1"] == ""  # quick: VGG11 sources only
    for r in rows:
        for key in ("clean.top1", "clean.top5", "pgd.top5"):
            assert 0.0 <= float(r[key]) <= 100.0
        assert float(r["clean.top1"]) <= float(r["clean.top5"])
    # the run store holds no copy of the weights; a run's model is rebuilt from the checkpoint file
    runs = load_results(get_experiment("imagenet-pretrained"), out, "quick").runs
    assert all((r.dir / "model.pt").stat().st_size < 4096 for r in runs)
    run = next(r for r in runs if r.variant == "VGG11 BN")
    model = run.model(files / "data")  # finds the checkpoint through $BNROBUST_WEIGHTS, which --weights set
    saved = torch.load(next((files / "weights").glob("vgg11_bn-*.pth")), weights_only=True)
    assert torch.equal(model.features[1].running_var, saved["features.1.running_var"])
    # re-running reuses every run; the report is rebuilt without the weights
    capsys.readouterr()
    assert _run(files, out) == 0
    assert "13 runs: 13 reused, 0 to run" in capsys.readouterr().err
    assert main(["report", "imagenet-pretrained", "--out", str(out), "--data-dir", str(files / "data")]) == 0


def _fails(files, tmp_path, capsys, *extra, **where) -> str:
    out = tmp_path / "results"
    capsys.readouterr()
    assert _run(files, out, *extra, **where) == 2
    err = capsys.readouterr().err.strip().splitlines()
    err = [line for line in err if not line.startswith("bnrobust: note:")]
    assert len(err) == 1, err
    assert not out.exists()  # nothing written
    return err[0]


def test_wrong_hash_fails_before_anything_is_written(files, env, tmp_path, capsys):
    bad = tmp_path / "weights"
    shutil.copytree(files / "weights", bad)
    good = next(bad.glob("vgg11-*.pth"))
    good.rename(bad / "vgg11-0badbad0.pth")
    err = _fails(files, tmp_path, capsys, weights=bad)
    assert err.startswith(f"bnrobust: error: weights file {bad}/vgg11-0badbad0.pth is corrupt or not the published "
                          "file (sha256 ")
    assert "download https://download.pytorch.org/models/vgg11-bbd30ac9.pth (torchvision) into" in err


def test_missing_class_folder_fails_before_anything_is_written(files, env, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(files / "data", data)
    (data / "imagenet" / "val" / "n07753592").rmdir()
    err = _fails(files, tmp_path, capsys, data=data)
    assert err == (f"bnrobust: error: ImageNet class folder {data}/imagenet/val/n07753592 is missing (1 of the 1,000 "
                   "class folders missing): copy the whole validation set (torchvision's ImageFolder layout)")


def test_unreadable_jpeg_fails_before_anything_is_written(files, env, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(files / "data", data)
    victim = sorted((data / "imagenet" / "val" / "n15075141").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:300])  # truncated: the header reads, the pixels do not
    err = _fails(files, tmp_path, capsys, "--set", "data.n_test=6", data=data)  # every image is used
    assert err.startswith(f"bnrobust: error: cannot read ImageNet image {victim} (")
    assert err.endswith("): replace it with the original file")
