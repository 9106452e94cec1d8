"""Attacks: bounds, determinism, the gradient-masking checks, and a cross-check against Foolbox."""
import pytest
import torch
from torch import nn

from bnrobust import attacks
from bnrobust.errors import BnrobustError
from bnrobust.eval import EvalContext, accuracy_and_loss, masking_problems
from bnrobust.eval.metrics import eval_masking
from bnrobust.models.linear import LinearClassifier
from bnrobust.train import TrainConfig, train


class MLP(nn.Module):
    def __init__(self, d=20, bn=False):
        super().__init__()
        layers = [nn.Linear(d, 64)] + ([nn.BatchNorm1d(64)] if bn else []) + [nn.ReLU(), nn.Linear(64, 2)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


@pytest.fixture(scope="module", params=[False, True], ids=["mlp", "mlp-bn"])
def trained(request, blobs):
    torch.manual_seed(0)
    model = MLP(bn=request.param)
    res = train(model, blobs, TrainConfig(lr=0.1, epochs=60, batch_size=50, momentum=0.9), 0)
    assert res.status == "ok"
    return model.eval()


def acc(model, x, y, perturb=None):
    return accuracy_and_loss(model, x, y, perturb, batch_size=100)[0]


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_gradient_masking_checks(trained, blobs, norm):
    x, y = blobs.x_test, blobs.y_test
    clean = acc(trained, x, y)
    assert clean > 80
    eps = [0.0, 0.02, 0.05, 0.1, 0.3, 1.0] if norm == "linf" else [0.0, 0.1, 0.25, 0.5, 1.5, 5.0]
    f = [acc(trained, x, y, lambda xb, yb: attacks.fgsm(trained, xb, yb, e, norm, (0, 1))) for e in eps]
    # 50 steps of 2.5 * eps / 50 (Madry et al.'s rule: the steps can cross the ball)
    p = [acc(trained, x, y, lambda xb, yb: attacks.pgd(trained, xb, yb, e, 50, max(e, 1e-9) / 20, norm,
                                                         clip=(0, 1))) for e in eps]
    assert masking_problems(clean, eps, f, p, fgsm_curve=False) == [], (f, p)
    assert f[1] < clean and p[2] < f[2]  # FGSM bites at small eps; iterating helps on a nonlinear model


def test_masking_checks_can_fail():
    assert masking_problems(90.0, [0, 0.1, 0.2], [89.0, 50.0, 0.0], [90.0, 40.0, 0.0])  # eps=0 != clean
    assert masking_problems(90.0, [0, 0.1, 0.2], [90.0, 50.0, 60.0], [90.0, 40.0, 0.0])  # rises with eps
    assert masking_problems(90.0, [0, 0.1, 0.2], [90.0, 50.0, 30.0], [90.0, 40.0, 20.0])  # never reaches ~0
    assert masking_problems(90.0, [0, 0.1, 0.2], [90.0, 30.0, 0.0], [90.0, 40.0, 0.0])  # PGD weaker than FGSM


def test_masking_slack_is_two_test_points():
    crossing = ([90.0, 39.0, 0.0], [90.0, 41.0, 0.0])  # PGD above FGSM by 2%
    assert masking_problems(90.0, [0, 0.1, 0.2], *crossing)  # on many points: a real gap
    assert masking_problems(90.0, [0, 0.1, 0.2], *crossing, n=100) == []  # two images of 100
    assert masking_problems(90.0, [0, 0.1, 0.2], [90.0, 38.0, 0.0], [90.0, 41.0, 0.0], n=100)  # three are not


def test_targeted_curves_keep_the_eps0_and_reaches_zero_checks():
    rising = ([90.0, 92.0, 40.0, 0.0], [90.0, 93.0, 50.0, 0.0])  # a targeted attack may do this
    assert masking_problems(90.0, [0, 0.1, 0.2, 0.4], *rising)
    assert masking_problems(90.0, [0, 0.1, 0.2, 0.4], *rising, targeted=True) == []
    assert masking_problems(90.0, [0, 0.1, 0.2, 0.4], [90.0, 92.0, 40.0, 0.0], [90.0, 93.0, 50.0, 20.0],
                            targeted=True)  # never reaches ~0
    assert masking_problems(90.0, [0, 0.1, 0.2, 0.4], [89.0, 92.0, 40.0, 0.0], [90.0, 93.0, 50.0, 0.0],
                            targeted=True)  # eps=0 != clean


def test_masking_metric_on_a_linear_model(toy):
    torch.manual_seed(0)
    model = LinearClassifier(2, 2)
    train(model, toy, TrainConfig(lr=0.1, epochs=20, batch_size=0), 0)
    out = eval_masking(model, toy, EvalContext(1000, 0, None, torch.device("cpu")), eps=(0, 1, 3, 5, 20), n=500)
    assert out["passed"], out["problems"]


def test_adv_damage_reuses_the_clean_and_fgsm_measurements(trained, blobs, monkeypatch):
    """Within one evaluation, adv-damage takes the clean and FGSM losses the clean and fgsm metrics
    measured (deterministic, so the same numbers as measured afresh) instead of attacking again."""
    from bnrobust.eval import metrics
    calls = []
    real = metrics.evaluate
    monkeypatch.setattr(metrics, "evaluate", lambda *a, **k: calls.append(1) or real(*a, **k))
    ctx = lambda: EvalContext(100, 0, (0, 1), torch.device("cpu"))  # noqa: E731
    shared = ctx()
    clean, fgsm = metrics.eval_clean(trained, blobs, shared), metrics.eval_fgsm(trained, blobs, shared, 0.1)
    n = len(calls)
    damage = metrics.eval_adv_damage(trained, blobs, shared, 0.1)
    assert len(calls) == n  # nothing measured again
    assert damage == metrics.eval_adv_damage(trained, blobs, ctx(), 0.1)  # a fresh evaluation: same numbers
    assert len(calls) == n + 2
    assert damage["damage"] == fgsm["loss"] - clean["loss"]
    assert metrics.eval_fgsm(trained, blobs, shared, 0.2) != fgsm and len(calls) == n + 3  # another eps: measured


def test_pgd_on_the_first_n_test_points(trained, blobs):
    """pgd's n attacks the head of the test set only: the same numbers as attacking ds.head(n),
    plus the clean accuracy of those points (what a share of clean accuracy kept divides by)."""
    from bnrobust.eval import metrics
    ctx = lambda: EvalContext(100, 0, (0, 1), torch.device("cpu"))  # noqa: E731
    head = metrics.eval_pgd(trained, blobs.head(60), ctx(), 0.3, steps=5)
    clean_head = metrics.eval_clean(trained, blobs.head(60), ctx())["acc"]
    assert clean_head != metrics.eval_clean(trained, blobs, ctx())["acc"]  # the subset's own clean accuracy
    assert metrics.eval_pgd(trained, blobs, ctx(), 0.3, steps=5, n=60) == {**head, "clean_acc": clean_head}
    assert metrics.eval_pgd(trained, blobs, ctx(), 0.3, steps=5) != head  # all of them: other numbers
    assert len(blobs.y_test) > 60


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_perturbations_stay_in_the_ball_and_the_range(trained, blobs, norm):
    x, y = blobs.x_test[:100], blobs.y_test[:100]
    eps = 0.1 if norm == "linf" else 0.5
    g = torch.Generator().manual_seed(0)
    for adv in (attacks.fgsm(trained, x, y, eps, norm, (0, 1)),
                attacks.pgd(trained, x, y, eps, 10, eps / 4, norm, True, (0, 1), generator=g)):
        d = (adv - x).flatten(1)
        size = d.abs().max(1).values if norm == "linf" else d.norm(dim=1)
        assert float(size.max()) <= eps + 1e-5
        assert float(adv.min()) >= 0 and float(adv.max()) <= 1


@pytest.mark.parametrize("random_start", [False, True])
def test_linf_pgd_is_the_textbook_projection(trained, blobs, random_start):
    """pgd clamps x_adv into one box (the eps-ball and the valid range together); the textbook
    step projects delta onto the ball, then clips x + delta. The same points, also for inputs
    outside the valid range by more than eps (standardized CIFAR-10's brightest pixels)."""
    x, y = blobs.x_test[:100].clone(), blobs.y_test[:100]
    x[:5, :3] = 1.3  # above the range by more than eps
    x[5:10, :3] = -0.4  # below it
    eps, step, steps, clip = 0.1, 0.03, 10, (0.0, 1.0)
    ours = attacks.pgd(trained, x, y, eps, steps, step, "linf", random_start, clip,
                       generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    delta = torch.zeros_like(x)
    if random_start:  # pgd draws a normal sample first (the l2 start's direction), then the uniform one
        torch.randn(x.shape, generator=g)
        delta = ((x + eps * (2 * torch.rand(x.shape, generator=g) - 1)).clamp(*clip) - x)
    for _ in range(steps):
        xa = (x + delta).requires_grad_(True)
        (grad,) = torch.autograd.grad(nn.functional.cross_entropy(trained(xa), y, reduction="sum"), xa)
        delta = (delta + step * grad.sign()).clamp(-eps, eps)
        delta = (x + delta).clamp(*clip) - x
    assert torch.allclose(ours, x + delta, atol=1e-6)
    assert float(ours.min()) >= 0 and float(ours.max()) <= 1


def test_random_start_is_seeded(trained, blobs):
    x, y = blobs.x_test[:50], blobs.y_test[:50]
    run = lambda s: attacks.pgd(trained, x, y, 0.1, 3, 0.02, random_start=True, clip=(0, 1),  # noqa: E731
                                generator=torch.Generator().manual_seed(s))
    assert torch.equal(run(0), run(0)) and not torch.equal(run(0), run(1))


def test_least_likely_target(trained, blobs):
    x, y = blobs.x_test, blobs.y_test
    with torch.no_grad():
        target = trained(x).argmin(1)
    adv = attacks.pgd(trained, x, y, 0.3, 20, 0.03, clip=(0, 1), target="least-likely")
    with torch.no_grad():
        hit = (trained(adv).argmax(1) == target).float().mean()
    assert hit > 0.8


def test_attacks_leave_the_model_alone(trained, blobs):
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    attacks.pgd(trained, blobs.x_test[:64], blobs.y_test[:64], 0.1, 3, 0.03, clip=(0, 1))
    assert all(torch.equal(before[k], v) for k, v in trained.state_dict().items())
    assert all(p.grad is None for p in trained.parameters())


def test_awgn():
    x = torch.full((200, 500), 0.5)
    noisy = attacks.awgn(x, 0.2, generator=torch.Generator().manual_seed(0))
    assert abs(float((noisy - x).std()) - 0.2) < 0.005
    assert float(attacks.awgn(x, 3.0, clip=(0, 1)).max()) <= 1.0
    with pytest.raises(BnrobustError):
        attacks.awgn(x, -1.0)


def test_bad_attack_arguments(trained, blobs):
    x, y = blobs.x_test[:4], blobs.y_test[:4]
    for call in (lambda: attacks.fgsm(trained, x, y, 0.1, norm="l1"),
                 lambda: attacks.fgsm(trained, x, y, -0.1),
                 lambda: attacks.pgd(trained, x, y, 0.1, 0, 0.01),
                 lambda: attacks.pgd(trained, x, y, 0.1, 5, 0.01, target="most-likely")):
        with pytest.raises(BnrobustError):
            call()


# --- independent implementation: Foolbox 3 --------------------------------------------------

fb = pytest.importorskip("foolbox", reason="foolbox (test extra) is not installed")


def foolbox_accuracy(model, x, y, attack, eps):
    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    _, advs, success = attack(fmodel, x, y, epsilons=[eps])
    return 100.0 * (1 - success[0].float().mean().item())


@pytest.mark.parametrize("kind, eps", [("fgsm", 0.05), ("linf-pgd", 0.05), ("l2-pgd", 0.5)])
def test_matches_foolbox(trained, blobs, kind, eps):
    x, y = blobs.x_test, blobs.y_test
    if kind == "fgsm":
        ours = acc(trained, x, y, lambda xb, yb: attacks.fgsm(trained, xb, yb, eps, clip=(0, 1)))
        theirs = foolbox_accuracy(trained, x, y, fb.attacks.FGSM(), eps)
    elif kind == "linf-pgd":
        ours = acc(trained, x, y, lambda xb, yb: attacks.pgd(trained, xb, yb, eps, 20, eps / 10, clip=(0, 1)))
        theirs = foolbox_accuracy(trained, x, y, fb.attacks.LinfPGD(abs_stepsize=eps / 10, steps=20,
                                                                    random_start=False), eps)
    else:
        ours = acc(trained, x, y, lambda xb, yb: attacks.pgd(trained, xb, yb, eps, 20, eps / 10, "l2", clip=(0, 1)))
        theirs = foolbox_accuracy(trained, x, y, fb.attacks.L2PGD(abs_stepsize=eps / 10, steps=20,
                                                                  random_start=False), eps)
    assert abs(ours - theirs) <= 0.5, (ours, theirs)


def test_matches_foolbox_on_mnist37_linear(mnist_root):
    from bnrobust.data.mnist import mnist_binary
    ds = mnist_binary(mnist_root, seed=0)
    torch.manual_seed(0)
    model = LinearClassifier(784, 2)
    train(model, ds, TrainConfig(lr=0.1, epochs=5, batch_size=128), 0)
    model.eval()
    x_test = ds.inputs("test")  # decoded to [0, 1] (stored as uint8)
    assert ds.clip == (0.0, 1.0) and float(x_test.min()) >= 0 and float(x_test.max()) <= 1
    ours = acc(model, x_test, ds.y_test, lambda xb, yb: attacks.fgsm(model, xb, yb, 0.1, clip=(0, 1)))
    theirs = foolbox_accuracy(model, x_test, ds.y_test, fb.attacks.FGSM(), 0.1)
    assert abs(ours - theirs) <= 0.5, (ours, theirs)
    ours = acc(model, x_test, ds.y_test, lambda xb, yb: attacks.pgd(model, xb, yb, 0.1, 20, 0.01, clip=(0, 1)))
    theirs = foolbox_accuracy(model, x_test, ds.y_test,
                              fb.attacks.LinfPGD(abs_stepsize=0.01, steps=20, random_start=False), 0.1)
    assert abs(ours - theirs) <= 0.5, (ours, theirs)
