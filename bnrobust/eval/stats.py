"""Statistics over seeds."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def mean_sem(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, standard error of the mean (ddof=1; nan for one value), count; ignores None."""
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if len(v) == 0:
        return math.nan, math.nan, 0
    sem = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.nan
    return float(v.mean()), sem, len(v)


# ---------------------------------------------------------------------------
