"""Gradient-masking checks of an attack's accuracy-vs-eps curves."""
from __future__ import annotations

from typing import Optional, Sequence


def masking_problems(clean: float, eps: Sequence[float], fgsm_acc: Sequence[float],
                     pgd_acc: Sequence[float], tol: float = 0.5, floor: float = 5.0,
                     fgsm_curve: bool = True, n: Optional[int] = None, targeted: bool = False) -> list[str]:
    """The gradient-masking checks: eps=0 gives clean accuracy, accuracy does not rise
    with eps, reaches ~0 (<= floor %) at the largest eps, and PGD <= FGSM everywhere.

    fgsm_curve=False skips the last two for FGSM: on a nonlinear model one large signed
    step overshoots, so FGSM accuracy can rise again at large eps without any masking
    (PGD, which keeps the monotone and reaches-zero checks, is the attack that must not).

    n (test points behind each accuracy) widens tol to two points' worth: PGD's last iterate can
    miss a point that FGSM's single step happens to break, so on 100 points a curve may cross by
    one or two images without masking, which shows as gaps of many points.

    targeted=True (least-likely class as the target) keeps only eps=0 and reaches-zero: a
    targeted attack pushes towards its target, not away from the label, so a point whose
    top class was wrong can become correct on the way, and PGD's path to the target need
    not misclassify more points than FGSM's one step at every eps. Reaching ~0 accuracy at
    a large eps still shows that its gradients lead somewhere.
    """
    if n:
        tol = max(tol, 200.0 / n)
    problems = []
    for name, accs in (("FGSM", fgsm_acc), ("PGD", pgd_acc)):
        if eps[0] == 0 and abs(accs[0] - clean) > 1e-9:
            problems.append(f"{name} at eps=0 gives {accs[0]:.2f}% != clean {clean:.2f}%")
        if name == "FGSM" and not fgsm_curve:
            continue
        for e0, e1, a0, a1 in zip(eps, eps[1:], accs, accs[1:]):
            if a1 > a0 + tol and not targeted:
                problems.append(f"{name} accuracy rises from {a0:.2f}% (eps={e0}) to {a1:.2f}% (eps={e1})")
        if accs[-1] > floor:
            problems.append(f"{name} accuracy at eps={eps[-1]} is {accs[-1]:.2f}% (> {floor}%)")
    for e, f, p in zip(eps, fgsm_acc, pgd_acc):
        if p > f + tol and not targeted:
            problems.append(f"PGD {p:.2f}% > FGSM {f:.2f}% at eps={e}")
    return problems
