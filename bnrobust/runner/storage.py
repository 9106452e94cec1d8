"""The run store: one directory per run, keyed by the hash of its resolved config, written
atomically (a temporary directory renamed into place)."""
from __future__ import annotations

import functools
import json
import os
import re
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import BnrobustError
from ..models import build_model
from .execute import get_dataset


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, allow_nan=True) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "run"


@dataclass
class Run:
    variant: str
    seed: int
    config: dict
    dir: Path

    @property
    def done(self) -> bool:
        return (self.dir / "record.json").exists()

    @functools.cached_property
    def record(self) -> dict:
        with open(self.dir / "record.json") as f:
            return json.load(f)

    @property
    def ok(self) -> bool:
        return self.done and self.record["status"] == "ok"

    def metric(self, path: str) -> Any:
        """A stored metric by dotted path, e.g. "fgsm.acc"; None if the run has none."""
        node: Any = self.record.get("metrics", {})
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    def model(self, root: Path | None = None) -> torch.nn.Module:
        """Rebuild the trained model from its config and stored weights (on CPU)."""
        torch.manual_seed(self.seed)
        model = build_model(self.config["model"], get_dataset(self.config, root))
        model.load_state_dict(torch.load(self.dir / "model.pt", map_location="cpu", weights_only=True))
        return model.eval()


def _owner() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def clean_stale_tmp(runs_dir: Path) -> None:
    """Remove temporary run directories left by killed processes of this host."""
    host = socket.gethostname()
    for tmp in runs_dir.glob(".tmp-*"):
        m = re.match(rf"\.tmp-{re.escape(host)}-(\d+)-", tmp.name)
        if m and not _pid_alive(int(m.group(1))):
            shutil.rmtree(tmp, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def save_run(run: Run, record: dict, model: torch.nn.Module) -> None:
    """Write config, record and weights into a temporary directory, then rename it into
    place: a run directory either is complete or does not exist."""
    run.dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=run.dir.parent, prefix=f".tmp-{_owner()}-{run.dir.name}-"))
    try:
        write_json_atomic(tmp / "config.json", {"variant": run.variant, **run.config})
        if record["status"] == "ok":
            torch.save({k: v.cpu() for k, v in model.state_dict().items()}, tmp / "model.pt")
        write_json_atomic(tmp / "record.json", record)
        if run.dir.exists():  # --force, or another worker finished it first
            shutil.rmtree(run.dir)
        os.replace(tmp, run.dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
