"""OS faults on data and output files are one line naming the path and the cause, never a traceback."""
import builtins
import shutil

import pytest

from bnrobust.cli import main
from bnrobust.data.mnist import MNIST_FILES, mnist_files
from bnrobust.errors import BnrobustError


def _copy_mnist(src, dst):
    raw = dst / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MNIST_FILES:
        shutil.copy(src / "MNIST" / "raw" / name, raw / name)
    return raw


def test_data_file_that_is_a_folder(tmp_path, mnist_root):
    raw = _copy_mnist(mnist_root, tmp_path)
    (raw / "t10k-labels-idx1-ubyte.gz").unlink()
    (raw / "t10k-labels-idx1-ubyte.gz").mkdir()
    with pytest.raises(BnrobustError, match=r"cannot read data file .*t10k-labels.*directory"):
        mnist_files(tmp_path, download=False)


def test_unreadable_data_file(tmp_path, mnist_root, monkeypatch):
    # root reads mode-000 files anyway, so the permission error is simulated at open()
    raw = _copy_mnist(mnist_root, tmp_path)
    real_open = builtins.open

    def deny(path, *a, **k):
        if str(path).endswith("train-labels-idx1-ubyte.gz"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *a, **k)
    monkeypatch.setattr(builtins, "open", deny)
    with pytest.raises(BnrobustError, match=r"cannot read data file .*train-labels.*Permission denied"):
        mnist_files(tmp_path, download=False)
    assert raw.exists()


def test_corruptions_show_into_a_file(tmp_path, capsys):
    target = tmp_path / "afile"
    target.write_text("x")
    assert main(["corruptions", "--show", "--suite", "mnist", "--out", str(target)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a file" in err[0]


def test_any_other_os_error_is_one_line(monkeypatch, capsys):
    import sys
    cli = sys.modules["bnrobust.cli.main"]  # the module (bnrobust.cli.main is also the function's name)

    def boom(args):
        raise OSError(28, "No space left on device", "/some/file")
    monkeypatch.setattr(cli, "cmd_report", boom)
    assert main(["report", "toy-tilting"]) == 2
    assert capsys.readouterr().err.strip() == "bnrobust: error: /some/file: No space left on device"
