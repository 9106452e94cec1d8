"""Our SGD (bnrobust.train.sgd) against torch.optim.SGD: the same weights, bit for bit, and
checkpoints that load either way."""
import pytest
import torch

from bnrobust.train.sgd import SGD


def _models():
    torch.manual_seed(0)
    a = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 3))
    b = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 3))
    b.load_state_dict(a.state_dict())
    return a, b


def _groups(m, wd):
    ps = list(m.parameters())
    return [{"params": [p for p in ps if p.dim() > 1], "weight_decay": wd}, {"params": [p for p in ps if p.dim() == 1],
                                                                              "weight_decay": 0.0, "lr_scale": 0.5}]


def _step(m, opt, x, y):
    opt.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(m(x), y).backward()
    opt.step()


@pytest.mark.parametrize("momentum,nesterov,wd", [(0.0, False, 0.0), (0.9, False, 5e-4), (0.9, True, 0.1)])
def test_same_bits_as_torch_sgd(momentum, nesterov, wd):
    ours, theirs = _models()
    opt = SGD(_groups(ours, wd), lr=0.1, momentum=momentum, nesterov=nesterov)
    ref = torch.optim.SGD(_groups(theirs, wd), lr=0.1, momentum=momentum, nesterov=nesterov)
    g = torch.Generator().manual_seed(1)
    for i in range(30):
        x, y = torch.randn(16, 5, generator=g), torch.randint(0, 3, (16,), generator=g)
        if i == 10:  # a schedule changes the groups' lr between steps
            for o in (opt, ref):
                for group in o.param_groups:
                    group["lr"] = 0.01
        _step(ours, opt, x, y)
        _step(theirs, ref, x, y)
    for p, q in zip(ours.parameters(), theirs.parameters()):
        assert torch.equal(p, q)
    opt.zero_grad()
    assert all(p.grad is None for p in ours.parameters())  # zero_grad frees them, as torch's does


def test_checkpoints_load_both_ways():
    ours, theirs = _models()
    opt = SGD(_groups(ours, 0.1), lr=0.1, momentum=0.9)
    ref = torch.optim.SGD(_groups(theirs, 0.1), lr=0.1, momentum=0.9)
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    for _ in range(3):
        _step(ours, opt, x, y)
        _step(theirs, ref, x, y)
    # a torch.optim checkpoint into ours, and ours into torch.optim: the next steps agree
    resumed, resumed_ref = _models()
    resumed.load_state_dict(theirs.state_dict()), resumed_ref.load_state_dict(ours.state_dict())
    o2 = SGD(_groups(resumed, 0.1), lr=0.1, momentum=0.9)
    o2.load_state_dict(ref.state_dict())
    r2 = torch.optim.SGD(_groups(resumed_ref, 0.1), lr=0.1, momentum=0.9)
    r2.load_state_dict(opt.state_dict())
    for _ in range(3):
        _step(resumed, o2, x, y)
        _step(resumed_ref, r2, x, y)
        _step(theirs, ref, x, y)
    for p, q, r in zip(resumed.parameters(), resumed_ref.parameters(), theirs.parameters()):
        assert torch.equal(p, r) and torch.equal(q, r)
    with pytest.raises(ValueError, match="different number"):
        SGD([{"params": list(resumed.parameters())[:2]}], lr=0.1).load_state_dict(ref.state_dict())
