"""Unbounded attacks (App. J): Carlini-Wagner L2 against Foolbox and fixed-eps PGD, and fooling images."""
import json
import math

import pytest
import torch
from torch import nn

from bnrobust import attacks
from bnrobust.attacks.cw import _logit_margin as logit_margin
from bnrobust.data import Dataset
from bnrobust.errors import BnrobustError
from bnrobust.eval import EvalContext
from bnrobust.eval.metrics import eval_cw, eval_fooling
from bnrobust.models.mlp import MLP
from bnrobust.train import TrainConfig, train

BUDGET = dict(binary_search_steps=5, max_iterations=200, initial_const=1e-3)  # paper: 9 x 10,000
KAPPA = 1.0


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine they cost 4-10x."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def sectors() -> Dataset:
    """A nonlinear 3-class task in [0, 1]^20: the angle of (sum x[:5], sum x[5:10]) around its centre."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(900, 20, generator=g)
    a, b = x[:, :5].sum(1) - 2.5, x[:, 5:10].sum(1) - 2.5
    y = ((torch.atan2(b, a) + math.pi) / (2 * math.pi / 3)).long().clamp(max=2)
    return Dataset("sectors", x[:600], y[:600], x[600:], y[600:], 3, (0.0, 1.0))


@pytest.fixture(scope="module", params=[False, True], ids=["mlp", "mlp-bn"])
def trained(request, sectors):
    torch.manual_seed(0)
    model = MLP(20, 3, depth=1, width=64, norm="bn" if request.param else "none", norm_layers=[1])
    assert any(isinstance(m, nn.BatchNorm1d) for m in model.modules()) == request.param
    train(model, sectors, TrainConfig(lr=0.1, epochs=30, batch_size=50, momentum=0.9), 0)
    return model.eval()


@pytest.fixture(scope="module")
def attacked(trained, sectors):
    """60 correctly classified test points and our CW-L2 adversarials (kappa = KAPPA)."""
    with torch.no_grad():
        keep = trained(sectors.x_test).argmax(1) == sectors.y_test
    assert float(keep.float().mean()) > 0.8
    x, y = sectors.x_test[keep][:60], sectors.y_test[keep][:60]
    return x, y, attacks.cw_l2(trained, x, y, confidence=KAPPA, **BUDGET)


def test_cw_matches_foolbox(trained, attacked):
    fb = pytest.importorskip("foolbox", reason="foolbox (test extra) is not installed")
    x, y, ours = attacked
    attack = fb.attacks.L2CarliniWagnerAttack(binary_search_steps=BUDGET["binary_search_steps"],
                                              steps=BUDGET["max_iterations"], stepsize=1e-2, confidence=KAPPA,
                                              initial_const=BUDGET["initial_const"])
    theirs, _, _ = attack(fb.PyTorchModel(trained, bounds=(0, 1)), x, y, epsilons=None)
    a, b = (attacks.cw_l2_stats(trained, x, adv, y, KAPPA) for adv in (ours, theirs))
    assert a["success_rate"] == b["success_rate"] == 100.0
    assert abs(a["l2_mean"] / b["l2_mean"] - 1) < 0.1, (a["l2_mean"], b["l2_mean"])
    assert float((a["l2"] / b["l2"]).median()) == pytest.approx(1.0, abs=0.02)


def test_cw_stays_in_the_box_with_the_asked_confidence(trained, attacked):
    x, y, adv = attacked
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    with torch.no_grad():
        logits = trained(adv)
    assert bool((logits.argmax(1) != y).all())
    z_y = logits.gather(1, y[:, None])[:, 0]
    other = logits.scatter(1, y[:, None], -math.inf).max(1).values
    assert float((other - z_y).min()) >= KAPPA - 1e-4
    st = attacks.cw_l2_stats(trained, x, adv, y)
    assert st["success_rate"] == 100.0 and 0 < st["l2_median"] and st["l2_mean"] == pytest.approx(
        float((adv - x).norm(dim=1).mean()), rel=1e-5)


def test_cw_is_below_the_smallest_successful_fixed_eps_pgd(trained, attacked):
    """CW minimizes the perturbation; l2-PGD at a fixed eps can only say 'some eps on the grid works'.
    Success means the same for both: another logit beats the label's by more than KAPPA."""
    x, y, adv = attacked
    cw = (adv - x).norm(dim=1)
    smallest = torch.full((len(x),), math.inf)
    for eps in (2.0, 1.5, 1.0, 0.75, 0.5, 0.35, 0.25, 0.15, 0.1):
        pgd = attacks.pgd(trained, x, y, eps, 30, eps / 10, "l2", clip=(0, 1))
        ok = attacks.cw_l2_stats(trained, x, pgd, y, KAPPA)["success"]
        smallest = torch.where(ok, torch.tensor(eps), smallest)
    broken = smallest.isfinite()
    assert float(broken.float().mean()) > 0.9
    cw, smallest = cw[broken], smallest[broken]
    # the reduced budget (5 binary-search steps) leaves c, hence the norm, a little above its optimum
    assert float((cw <= smallest + 1e-4).float().mean()) >= 0.95 and bool((cw <= 1.1 * smallest).all())
    assert float(cw.mean()) < 0.9 * float(smallest.mean()), (cw.mean(), smallest.mean())


def test_cw_returns_x_where_it_cannot_succeed():
    """A model that predicts class 0 everywhere on [0, 1]^d cannot be fooled on label 0;
    a point already misclassified (label 1) is broken at distance ~0."""
    model = nn.Linear(5, 3).eval()
    with torch.no_grad():
        model.weight.zero_()
        model.bias.copy_(torch.tensor([3.0, 0.0, -1.0]))
    x, y = torch.rand(4, 5, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 0, 1, 1])
    adv = attacks.cw_l2(model, x, y, binary_search_steps=3, max_iterations=20)
    assert torch.equal(adv[:2], x[:2])
    st = attacks.cw_l2_stats(model, x, adv, y)
    assert st["success"].tolist() == [False, False, True, True] and st["l2_mean"] < 1e-4
    assert attacks.cw_l2_stats(model, x[:2], adv[:2], y[:2])["l2_mean"] is None


def test_cw_leaves_the_model_alone(trained, sectors):
    for p in trained.parameters():
        p.grad = None  # Foolbox's attack leaves gradients behind
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    attacks.cw_l2(trained, sectors.x_test[:8], sectors.y_test[:8], binary_search_steps=2, max_iterations=5)
    assert not trained.training
    assert all(torch.equal(before[k], v) for k, v in trained.state_dict().items())
    assert all(p.grad is None for p in trained.parameters())


def test_cw_bad_arguments(trained, sectors):
    x, y = sectors.x_test[:4], sectors.y_test[:4]
    for kw in (dict(confidence=-1.0), dict(binary_search_steps=0), dict(max_iterations=0), dict(lr=0.0),
               dict(initial_const=0.0), dict(clip=(1.0, 0.0))):
        with pytest.raises(BnrobustError):
            attacks.cw_l2(trained, x, y, **kw)


# --- fooling images ---------------------------------------------------------------------------


def test_softmax_margin():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]))
    assert attacks.softmax_margin(logits).tolist() == pytest.approx([0.5, 0.3])
    assert attacks.softmax_margin(logits, torch.tensor([0, 0])).tolist() == pytest.approx([0.5, -0.5])


def test_fooling_images_reach_their_targets(trained):
    g = torch.Generator().manual_seed(0)
    rec, targets = attacks.fooling_trajectory(trained, 10, 3, (20,), 100, record_at=(0, 1, 10), generator=g)
    assert sorted(rec) == [0, 1, 10, 100] and targets.tolist() == [0] * 10 + [1] * 10 + [2] * 10
    margins = []
    for step in (0, 1, 10, 100):
        assert float(rec[step].min()) >= 0 and float(rec[step].max()) <= 1
        with torch.no_grad():
            logits = trained(rec[step])
        margins.append((float(attacks.softmax_margin(logits, targets).mean()),
                        float(logit_margin(logits, targets).mean())))
    soft, logit = zip(*margins)
    assert logit[0] < logit[1] < logit[2] < logit[3], logit  # softmax margins saturate at 1 on this MLP
    assert soft[0] <= soft[1] <= soft[2] <= soft[3] and soft[3] > 0.9, soft
    with torch.no_grad():
        assert float((trained(rec[100]).argmax(1) == targets).float().mean()) >= 0.95


def test_fooling_images_are_seeded(trained):
    def run(seed):
        return attacks.fooling_images(trained, 2, 3, (20,), 5, generator=torch.Generator().manual_seed(seed))[0]
    assert torch.equal(run(1), run(1)) and not torch.equal(run(1), run(2))
    with pytest.raises(BnrobustError):
        attacks.fooling_trajectory(trained, 2, 3, (20,), 5, record_at=(6,))
    with pytest.raises(BnrobustError):
        attacks.fooling_images(trained, 2, 3, (20,), 5, step_size=0.0)


# --- the named evaluations ----------------------------------------------------------------------


def test_cw_and_fooling_metrics(trained, sectors):
    ctx = EvalContext(batch_size=16, seed=0, clip=(0.0, 1.0), device=torch.device("cpu"))
    cw = eval_cw(trained, sectors, ctx, n=24, confidence=KAPPA, binary_search_steps=3, max_iterations=50,
                 initial_const=0.1)
    assert cw["n"] == 24 and cw["success"] > 80 and 0 < cw["l2_median"] and 0 < cw["l2_mean"] < 3
    fool = eval_fooling(trained, sectors, ctx, n_per_class=4, steps=(1, 30))
    assert fool["steps"] == [1, 30] and fool["target_rate"][1] >= fool["target_rate"][0]
    assert fool["target_margin_mean"][0] < fool["target_margin_mean"][1]
    assert fool["saturated"][0] <= fool["saturated"][1] and 0 <= fool["saturated"][1] <= 100
    # An l2 step of 0.2 moves an image by at most 0.2: clipping to the box only shortens it.
    assert 0 < fool["moved_l2"][0] <= 0.2 + 1e-5 and fool["moved_l2"][0] < fool["moved_l2"][1] <= 30 * 0.2 + 1e-4
    json.dumps(cw), json.dumps(fool)
