"""Experiment definitions are validated when constructed (ids, not display labels), and reports
attach each explanation only to the cells it is written for, print a shared reason once, do
not pretend to test one-seed cells, and keep Fig. 3a's informative range readable."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from bnrobust.errors import BnrobustError
from bnrobust.experiments.base import Column, Discrepancy, Experiment, Results
from bnrobust.report.figures import focus_limits
from bnrobust.report.tables import table_markdown, write_report
from bnrobust.runner.storage import Run

BASE = {"data": {"name": "gaussian-2d"}, "model": {"name": "linear"},
        "eval": {"metrics": {"clean": {"name": "clean"}, "theta": {"name": "tilt"}}}}
COLUMNS = [Column("Test Acc.", "clean.acc", id="clean"), Column("θ (deg)", "theta.deg", id="theta")]
REFERENCE = {"GD": {"clean": (97.0, 0.1), "theta": (10.0, 0.5)},
             "BNGD": {"clean": (98.0, 0.1), "theta": (90.0, 0.0)}}


def _exp(**kw: Any) -> Experiment:
    """A small valid definition; keyword arguments replace its fields."""
    fields: dict[str, Any] = dict(id="t", paper="P", title="T", description="D", base=BASE,
                                  variants={"GD": {}, "BNGD": {"model.norm": "bn"}}, seeds={"quick": 2},
                                  columns=COLUMNS, reference=REFERENCE)
    fields.update(kw)
    return Experiment(**fields)


def _one_line_error(match: str, **kw: Any) -> str:
    with pytest.raises(BnrobustError, match=match) as e:
        _exp(**kw)
    msg = str(e.value)
    assert "\n" not in msg and "'t'" in msg, msg  # one line, naming the experiment
    return msg


def _results(tmp_path: Path, exp: Experiment, values: dict[str, list[dict]]) -> Results:
    """Results whose runs have the given metrics records, one per seed."""
    runs = []
    for variant, seeds in values.items():
        for seed, metrics in enumerate(seeds):
            run = Run(variant, seed, {}, tmp_path / "runs" / f"{variant}-{seed}")
            run.dir.mkdir(parents=True)
            (run.dir / "record.json").write_text("{}")
            run.__dict__["record"] = {"status": "ok", "metrics": metrics, "seconds": 0.0}
            runs.append(run)
    return Results(exp, "quick", runs)


def _rec(acc: float, deg: float) -> dict:
    return {"clean": {"acc": acc}, "theta": {"deg": deg}}


# -- validation at construction ---------------------------------------------------------------

def test_valid_definition_constructs():
    exp = _exp(discrepancies=[Discrepancy(variants=["BNGD"], columns=["theta"], why="why")])
    assert exp.discrepancy("BNGD", "theta") == "why" and exp.discrepancy("GD", "theta") is None


def test_typo_in_reference_column_id_fails_at_construction():
    msg = _one_line_error("thetta", reference={"GD": {"thetta": 1.0}})
    assert "did you mean theta" in msg


def test_display_label_as_reference_key_fails_at_construction():
    _one_line_error("θ", reference={"GD": {"θ (deg)": 1.0}})


def test_typo_in_reference_variant_fails_at_construction():
    msg = _one_line_error("BNDG", reference={"BNDG": {"theta": 90.0}})
    assert "did you mean BNGD" in msg


def test_typo_in_discrepancy_column_fails_at_construction():
    msg = _one_line_error("thet", discrepancies=[Discrepancy(variants=["BNGD"], columns=["thet"], why="w")])
    assert "did you mean theta" in msg


def test_typo_in_discrepancy_variant_fails_at_construction():
    _one_line_error("BNG", discrepancies=[Discrepancy(variants=["BNG"], columns=["theta"], why="w")])


def test_typo_in_scale_variants_name_fails_at_construction():
    msg = _one_line_error("BN-GD", scale_variants={"quick": ["GD", "BN-GD"]})
    assert "did you mean BNGD" in msg


def test_unknown_scale_in_scale_variants_fails_at_construction():
    _one_line_error("quik", scale_variants={"quik": ["GD"]})


def test_typo_in_ratio_to_fails_at_construction():
    _one_line_error("GDD", ratio_to={"BNGD": "GDD"})
    _one_line_error("BNGDx", ratio_to={"BNGDx": "GD"})


def test_column_metric_missing_from_a_variants_eval_metrics_fails_at_construction():
    msg = _one_line_error("fgsm", columns=COLUMNS + [Column("FGSM", "fgsm.acc", id="fgsm")])
    assert "'GD'" in msg  # names the first variant that lacks it
    # a variant that drops a metric by its own overrides is caught too
    _one_line_error("theta", variants={"GD": {}, "BNGD": {"eval.metrics": {"clean": {"name": "clean"}}}})


def test_duplicate_column_ids_fail_at_construction():
    _one_line_error("clean", columns=COLUMNS + [Column("Clean again", "clean.acc", id="clean")])


def test_discrepancy_without_a_paper_value_fails_at_construction():
    _one_line_error("no paper value", reference={"GD": {"clean": 97.0}},
                    discrepancies=[Discrepancy(variants=["GD"], columns=["theta"], why="never shown")])


def test_two_discrepancies_for_one_cell_fail_at_construction():
    _one_line_error("two discrepancies", discrepancies=[
        Discrepancy(variants=["GD", "BNGD"], columns=["clean"], why="a"),
        Discrepancy(variants=["BNGD"], columns=None, why="b")])


def test_discrepancy_variants_given_as_a_string_fail():
    with pytest.raises(BnrobustError, match="list of ids"):
        Discrepancy(variants="BNGD", columns=["theta"], why="w")


def test_every_registered_experiment_constructs():
    """Importing the registry constructs (so validates) every definition; constructing each
    again from its fields checks that validation is part of construction."""
    from bnrobust.experiments import EXPERIMENTS, get_experiment
    assert len(EXPERIMENTS) >= 12
    for exp in map(get_experiment, EXPERIMENTS.names()):
        again = Experiment(**{f.name: getattr(exp, f.name) for f in dataclasses.fields(exp)})
        for d in exp.discrepancies:
            for v in d.variants:
                for c in d.columns or exp.reference[v]:
                    assert again.discrepancy(v, c) == d.why


def test_each_experiment_is_registered_by_the_module_that_get_experiment_imports(monkeypatch):
    """get_experiment imports only MODULES[id]: each module, imported into a fresh registry
    with no other experiment module loaded, registers the ids MODULES gives it (and no other)."""
    import importlib
    import sys

    import bnrobust.experiments as E
    from bnrobust.registry import Registry
    assert list(E.EXPERIMENTS) == list(E.MODULES)  # every module loaded: exactly these ids, in this order
    loaded = {k: v for k, v in sys.modules.items() if k.startswith("bnrobust.experiments.") and k != "bnrobust.experiments.base"}
    try:
        for module in dict.fromkeys(E.MODULES.values()):
            for name in loaded:
                sys.modules.pop(name, None)
            monkeypatch.setattr(E, "_REGISTRY", Registry("experiment"))
            importlib.import_module(f"bnrobust.experiments.{module}")
            mine = [i for i, m in E.MODULES.items() if m == module]
            assert set(mine) <= set(E._REGISTRY), module
            assert set(E._REGISTRY) <= {i for i, m in E.MODULES.items()
                                        if f"bnrobust.experiments.{m}" in sys.modules}, module
    finally:
        sys.modules.update(loaded)


def test_an_unknown_experiment_is_one_line_naming_the_ids():
    from bnrobust.experiments import get_experiment
    with pytest.raises(BnrobustError, match=r"unknown experiment 'mnist37-linaer' \(did you mean mnist37-linear"):
        get_experiment("mnist37-linaer")


def test_mnist37_notes_about_bngd_do_not_attach_to_gd():
    from bnrobust.experiments import get_experiment
    exp = get_experiment("mnist37-linear")
    for col in ("theta", "fgsm", "awgn"):
        assert exp.discrepancy("GD", col) is None
        assert exp.discrepancy("BNGD Affine F", col) and exp.discrepancy("BNGD Affine T", col)
    assert all(exp.discrepancy(v, "clean") for v in exp.variants)  # "fits better" is about every model


# -- Results: unknown variants and metric paths are errors ------------------------------------

def test_check_referencing_a_missing_variant_raises(tmp_path):
    exp = _exp(checks=lambda r: [(f"BN tilts: {r.mean('BN', 'theta.deg'):.1f}", True)])
    r = _results(tmp_path, exp, {"GD": [_rec(97, 10)] * 2, "BNGD": [_rec(98, 90)] * 2})
    with pytest.raises(BnrobustError, match=r"no variant 'BN'.*did you mean BNGD"):
        r.stat("BN", "theta.deg")
    with pytest.raises(BnrobustError, match="no variant 'BN'"):
        write_report(r, tmp_path / "report")


def test_missing_metric_path_raises_one_line_but_none_value_is_missing(tmp_path):
    exp = _exp()
    r = _results(tmp_path, exp, {"GD": [_rec(97, 10), {"clean": {"acc": None}, "theta": {"deg": 9.0}}]})
    assert r.stat("GD", "clean.acc")[2] == 1  # a stored None is a missing value, not an error
    with pytest.raises(BnrobustError, match=r"'theta\.dgr'.*did you mean deg") as e:
        r.stat("GD", "theta.dgr")
    assert "\n" not in str(e.value)


def test_share_column_divides_by_the_first_denominator_a_run_has(tmp_path):
    """A share-of-clean column divides by the clean accuracy of the points the attack used where the
    run reports one, else by the clean metric (runs stored before attacks reported theirs)."""
    share = Column("θ / clean", "theta.deg", id="share", per=("theta.clean_acc", "clean.acc"))
    exp = _exp(columns=[*COLUMNS, share], reference={})
    r = _results(tmp_path, exp, {"GD": [{"clean": {"acc": 50.0}, "theta": {"deg": 20.0, "clean_acc": 40.0}},
                                        {"clean": {"acc": 50.0}, "theta": {"deg": 20.0}}]})
    assert r.cell("GD", share)[:2] == pytest.approx((45.0, 5.0))  # 20 / 40 and 20 / 50
    _one_line_error("column 'share' reads metric 'noise.acc'", columns=[
        *COLUMNS, Column("θ / noise", "theta.deg", id="share", per=("theta.clean_acc", "noise.acc"))])


# -- the report's comparison with the paper ---------------------------------------------------

def _flag_lines(tmp_path: Path, exp: Experiment, values: dict[str, list[dict]]) -> list[str]:
    return table_markdown(_results(tmp_path, exp, values))[1]


def test_discrepancy_for_bngd_does_not_attach_to_gd(tmp_path):
    exp = _exp(discrepancies=[Discrepancy(variants=["BNGD"], columns=["theta"], why="Near 90 in BNGD.")])
    flags = _flag_lines(tmp_path, exp, {"GD": [_rec(97, 40), _rec(97, 41)], "BNGD": [_rec(98, 80), _rec(98, 81)]})
    bngd = [f for f in flags if "**BNGD, θ (deg)**" in f]
    gd = [f for f in flags if "**GD, θ (deg)**" in f]
    assert len(bngd) == 1 and "Near 90 in BNGD." in bngd[0]
    assert len(gd) == 1 and "Near 90" not in gd[0] and "No explanation recorded" in gd[0]


def test_shared_reason_is_printed_once_naming_the_cells(tmp_path):
    why = "Both models fit better."
    exp = _exp(discrepancies=[Discrepancy(variants=["GD", "BNGD"], columns=["clean"], why=why)])
    flags = _flag_lines(tmp_path, exp, {"GD": [_rec(99, 10), _rec(99.1, 10.1)],
                                        "BNGD": [_rec(99.5, 90), _rec(99.6, 90)]})
    text = "\n".join(flags)
    assert text.count(why) == 1
    line = next(f for f in flags if why in f)
    assert "**GD, Test Acc.**" in line and "**BNGD, Test Acc.**" in line
    assert re.search(r"ours 99\.05 .* vs paper 97\.00 .*ours 99\.55 .* vs paper 98\.00", line)


def test_one_seed_prints_no_inf_sem_and_says_differences_are_not_tested(tmp_path):
    exp = _exp()
    r = _results(tmp_path, exp, {"GD": [_rec(50, 45)], "BNGD": [_rec(60, 10)]})
    table, flags, untested = table_markdown(r)
    assert flags == [] and untested == 4
    report = write_report(r, tmp_path / "report").read_text()
    assert "inf SEM" not in report and "No explanation recorded" not in report
    assert "Where we differ" not in report
    assert report.count("With one seed (n = 1) there is no SEM") == 1


def test_one_seed_cells_are_counted_beside_tested_ones(tmp_path):
    exp = _exp()
    r = _results(tmp_path, exp, {"GD": [_rec(50, 45)], "BNGD": [_rec(60, 10), _rec(61, 11)]})
    table, flags, untested = table_markdown(r)
    assert untested == 2 and len(flags) == 1 and "**GD," not in flags[0]  # BNGD's cells are still tested
    report = write_report(r, tmp_path / "report").read_text()
    assert "2 of the 4 cells with a paper value are not tested" in report


def test_zero_spread_on_both_sides_is_worded_not_inf(tmp_path):
    exp = _exp(reference={"GD": {"clean": 94.4}})
    flags = _flag_lines(tmp_path, exp, {"GD": [_rec(96.7, 1), _rec(96.7, 1)], "BNGD": [_rec(1, 1)] * 2})
    assert len(flags) == 1 and "inf" not in flags[0] and "identical over our seeds" in flags[0]


# -- Fig. 3a ---------------------------------------------------------------------------------

def test_fig3a_x_range_excludes_the_lambda_9_outlier():
    from bnrobust.experiments.linear import eps_sweep_xlim
    # clean accuracies of the quick sweep: BNGD c = 1e-3, 0.1, 1, 20; GD-L2 λ = 1e-3, 0.1, 1, 9
    clean = [98.33, 98.06, 97.82, 96.93, 97.91, 97.25, 96.12, 50.44]
    (lo, hi), off = eps_sweep_xlim(clean)
    assert off == [7]
    assert 94 < lo < 96.12 and 98.33 < hi < 99
    assert all(lo <= c <= hi for c in clean[:7])


def test_focus_limits_keeps_everything_when_all_points_are_below_the_floor():
    (lo, hi), off = focus_limits([50.1, 50.3, float("nan")], floor=60)
    assert off == [] and lo < 50.1 and hi > 50.3


def test_legend_only_where_a_panel_has_labelled_artists(recwarn):
    """A figure panel whose runs all failed to train has nothing to label: no legend, no warning."""
    from bnrobust.report import figures
    from bnrobust.report.figures import legend, subplots
    fig, (empty, full) = subplots(1, 2)
    full.plot([0, 1], [0, 1], label="BN")
    legend(empty), legend(full)
    assert empty.get_legend() is None and full.get_legend() is not None
    assert not [w for w in recwarn if "legend" in str(w.message)]
    figures._pyplot().close(fig)
