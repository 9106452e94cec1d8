"""Named random streams derived from a run's seed, in one place.

Each consumer draws from its own generator seeded `seed + offset`, so adding noise to one
metric never shifts another's random numbers. The offsets are arbitrary but fixed: changing
one changes stored results (bump the affected metric's version)."""
from __future__ import annotations

from enum import IntEnum


class Stream(IntEnum):
    ADV_TRAIN = 1          # adversarial training's random starts
    AWGN = 12345           # the noise of the awgn metric (same noise for every model of a seed)
    PGD = 54321            # PGD random starts in evaluation
    MINIBATCHES = 777      # the two mini-batches of the batch-mixing metric
    FOOLING = 24680        # the starting noise of fooling images
    GRID_SOURCES = 13579   # which test image of each class the target grid starts from


def stream_seed(seed: int, stream: Stream) -> int:
    return int(seed) + int(stream)
