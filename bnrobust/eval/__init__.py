"""Evaluation: what we measure on a trained model (`EVALS`, selected by `eval.metrics`), the
gradient-masking checks, and statistics over seeds."""
from .masking import masking_problems
from .measure import accuracy_and_loss, evaluate, nearest_centroid_direction, tilt_angle
from .metrics import EVALS, EvalContext
from .corrupted import corrupted_test_set, mean_corruption_error
from .stats import mean_sem
from . import topk  # noqa: E402,F401  (registers the topk and transfer metrics)

__all__ = ["EVALS", "EvalContext", "accuracy_and_loss", "corrupted_test_set", "evaluate", "masking_problems",
           "mean_corruption_error", "mean_sem", "nearest_centroid_direction", "tilt_angle"]
