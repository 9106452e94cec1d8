"""Every config value is checked before any work starts (one line, exit 2, nothing written),
and a run's identity is its fully resolved config plus the versions of what it uses."""
import dataclasses

import pytest

from bnrobust.cli import main
from bnrobust.config import config_hash, resolve_config
from bnrobust.errors import BnrobustError
from bnrobust.eval import EVALS
from bnrobust.experiments import get_experiment
from bnrobust.registry import Registry
from bnrobust.train import TRAINERS, TrainConfig

Q = ["--seeds", "1", "--set", "train.epochs=1"]


def _fails_before_work(capsys, tmp_path, argv, msg):
    out = tmp_path / "out"
    code = main(["run", *argv, "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("bnrobust: error:") and msg in err[0], err
    assert not out.exists() or not any(out.rglob("record.json"))


@pytest.mark.parametrize("name, argv, msg", [
    ("eval_nonsense", ["toy-tilting", "--set", "eval.nonsense=1"], "eval has no option 'nonsense'"),
    ("eval_metric_typo", ["mnist37-linear", *Q, "--set", "eval.metrics.fgsm.epz=0.2"], "has no option 'epz'"),
    ("eval_metric_without_name", ["toy-tilting", "--set", "eval.metrics.fgsm.epz=0.2"],
     "eval.metrics.fgsm must be a name or a section with a 'name'"),
    ("eval_metric_singular", ["toy-tilting", "--set", "eval.metric.fgsm.eps=0.2"], "eval has no option 'metric'"),
    ("model_norm_weird", ["toy-tilting", "--set", "model.norm=weird"], "unknown norm 'weird'"),
    ("milestones_int", ["toy-tilting", "--set", "train.milestones=5"], "milestones: Input should be a valid list"),
    ("milestones_str", ["toy-tilting", "--set", "train.milestones=abc"], "milestones"),
    ("fgsm_eps_str", ["mnist37-linear", *Q, "--set", "eval.metrics.fgsm.eps=abc"], "eps: Input should be a valid number"),
    ("fgsm_eps_negative", ["mnist37-linear", *Q, "--set", "eval.metrics.fgsm.eps=-1"], "greater than or equal to 0"),
    ("classes_str", ["mnist37-linear", *Q, "--set", "data.classes=abc"], "classes: Input should be a valid list"),
    ("classes_same", ["mnist37-linear", *Q, "--set", "data.classes=[3, 3]"], "two different digits"),
    ("seed_set", ["toy-tilting", "--set", "seed=abc"], "--seeds"),
    ("epochs_bool", ["toy-tilting", "--set", "train.epochs=true"], "epochs: Input should be a valid integer"),
    ("lr_inf", ["toy-tilting", "--set", "train.lr=.inf"], "lr: Input should be a finite number"),
    ("bn_batch_size_1", ["mnist37-linear", *Q, "--set", "train.batch_size=1", "--set", "data.n_per_class=50"],
     "batch_size=1 with a BN model"),
    ("device_meta", ["toy-tilting", "--device", "meta"], "unsupported device 'meta'"),
    ("device_mps", ["toy-tilting", "--device", "mps"], "unsupported device 'mps'"),
    ("seeds_huge", ["toy-tilting", "--seeds", "1000000000"], "--seeds must be at most"),
    ("unknown_executor", ["toy-tilting", "--executor", "rey"], "unknown executor 'rey'"),
    ("unknown_model_close_match", ["toy-tilting", "--set", "model.name=linaer"], "did you mean linear"),
])
def test_bad_value_is_one_line_before_any_work(name, argv, msg, capsys, tmp_path, mnist_root, monkeypatch):
    monkeypatch.setenv("BNROBUST_DATA", str(mnist_root))
    _fails_before_work(capsys, tmp_path, argv, msg)


def test_empty_out_is_refused(capsys):
    assert main(["run", "toy-tilting", "--out", ""]) == 2
    assert "--out must name a folder" in capsys.readouterr().err


def test_set_over_a_variant_value_is_noted(capsys):
    exp = get_experiment("depth-batch-grid")
    shadowed = exp.shadowed("quick", {"train.epochs": 5, "train.lr": 0.1})
    assert "train.epochs" in shadowed and "train.lr" not in shadowed
    assert set(shadowed["train.epochs"]) == set(exp.variant_names("quick"))


BASE = {"data": {"name": "gaussian-2d", "n_train": 20, "n_test": 20}, "model": {"name": "linear"},
        "train": {"epochs": 1}, "eval": {"metrics": {"clean": {"name": "clean"}}}, "seed": 0}


def test_resolved_config_fills_every_default():
    cfg = resolve_config(BASE)
    assert cfg["train"] == TrainConfig(epochs=1).to_dict()
    assert cfg["model"]["norm"] == {"name": "none"} and cfg["eval"]["batch_size"] == 1000
    assert cfg["versions"] == {"dataset:gaussian-2d": 1, "input norm:none": 1, "metric:clean": 1,
                               "model:linear": 1, "norm:none": 1, "trainer:sgd": 1}
    assert config_hash(resolve_config(BASE)) == config_hash(cfg)  # unchanged config: same run


def test_metric_version_bump_gives_a_new_run(monkeypatch):
    before = config_hash(resolve_config(BASE))
    monkeypatch.setitem(EVALS._versions, "clean", 2)
    assert config_hash(resolve_config(BASE)) != before


def test_trainer_default_change_gives_a_new_run(monkeypatch):
    before = config_hash(resolve_config(BASE))
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    monkeypatch.setattr(fields["momentum"], "default", 0.5)
    monkeypatch.setattr(TRAINERS, "_schemas", {})  # the schema is built from the defaults once
    cfg = resolve_config(BASE)
    assert cfg["train"]["momentum"] == 0.5 and config_hash(cfg) != before


def test_builder_default_change_gives_a_new_spec():
    reg = Registry("thing")

    @reg.register("a")
    def a(x: int = 1):
        return x
    first = reg.resolve("a")
    reg._fns["a"].__defaults__ = (2,)
    reg._schemas.clear()
    assert first == {"name": "a", "x": 1} and reg.resolve("a") == {"name": "a", "x": 2}


def test_an_added_option_keeps_stored_runs_identity():
    """An option annotated ADDED is left out of the resolved spec at its default (stored runs keep
    their hashes), and is checked and kept when given."""
    from typing import Annotated, Optional
    from bnrobust.registry import ADDED
    reg = Registry("thing")

    @reg.register("a")
    def a(x: int = 1, k: Annotated[Optional[int], ADDED] = None):
        return x, k
    assert reg.resolve("a") == {"name": "a", "x": 1}
    assert reg.resolve({"name": "a", "k": 3}) == {"name": "a", "x": 1, "k": 3}
    assert reg.build({"name": "a", "k": 3}) == (1, 3) and reg.build("a") == (1, None)
    with pytest.raises(BnrobustError, match="k"):
        reg.resolve({"name": "a", "k": "three"})
    # pgd's n came this way: a pgd spec without it resolves as before it existed
    assert EVALS.resolve({"name": "pgd", "eps": 0.03}) == {
        "name": "pgd", "eps": 0.03, "steps": 20, "step_size": None, "norm": "linf", "random_start": False,
        "target": "none"}


def test_changed_metric_version_reruns_and_unchanged_is_reused(tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "out")
    argv = ["run", "toy-tilting", "--seeds", "1", "--set", "train.epochs=2", "--out", out, "--no-report"]
    assert main(argv) == 0
    runs = lambda: sorted(p.name for p in (tmp_path / "out" / "toy-tilting" / "runs").iterdir()  # noqa: E731
                          if not p.name.startswith("."))
    first = runs()
    assert main(argv) == 0 and runs() == first   # reused
    monkeypatch.setitem(EVALS._versions, "tilt", 2)
    assert main(argv) == 0
    assert len(runs()) == 2 * len(first)          # the tilt-using runs were recomputed under new names


@pytest.mark.parametrize("what", ["experiments", "models", "datasets", "norms", "attacks", "metrics", "corruptions",
                                  "executors"])
def test_list_every_registry(what, capsys):
    assert main(["list", what]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines and all(line.strip() for line in lines)


def test_set_inside_a_switched_off_section_applies_only_where_it_is_on(capsys, tmp_path):
    exp = get_experiment("mnist-c")
    over = {"train.adversarial.steps": 2}
    cfg = {v: c for v, s, c in exp.configs("quick", 1, over)}
    assert cfg["PGD"]["train"]["adversarial"]["steps"] == 2 and cfg["PGD BN"]["train"]["adversarial"]["eps"] == 0.3
    assert cfg["BN"]["train"]["adversarial"] is None
    assert set(exp.not_applied("quick", over)["train.adversarial.steps"]) == {"Per-img", "BN"}


def test_set_key_of_one_model_family_skips_variants_without_that_option():
    """`--set model.width_factor=...` reaches the VGGs of cifar10-small-lr, not its WideResNets (which have
    no such option, and say so in a note); a key no variant has stays, so its typo is an error."""
    from bnrobust.experiments import get_experiment
    exp = get_experiment("cifar10-small-lr")
    over = {"model.width_factor": 0.25}
    assert exp.overrides_for("VGG8", "quick", over) == over
    assert exp.overrides_for("WRN-28-10 BN", "quick", over) == {}
    assert exp.not_applied("quick", over) == {"model.width_factor": ["WRN-28-10 Fixup", "WRN-28-10 BN"]}
    typo = {"model.widht_factor": 0.25}
    assert exp.overrides_for("WRN-28-10 BN", "quick", typo) == typo
    with pytest.raises(BnrobustError, match="widht_factor"):
        exp.configs("quick", overrides=typo)


def test_set_notes_name_only_the_selected_variants():
    """With --variant, a note about --set names only the selected rows, and drops keys that none of them has."""
    from bnrobust.cli.main import _selected
    notes = {"train.epochs": ["VGG13", "WRN-28-10 BN"], "train.lr": ["VGG13"]}
    assert _selected(notes, None) == notes
    assert _selected(notes, ["WRN-28-10 BN"]) == {"train.epochs": ["WRN-28-10 BN"]}
