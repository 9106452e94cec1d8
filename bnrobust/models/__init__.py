"""Models: plain `nn.Module`s built by name from a config section (`MODELS`, timm-style).

Every model takes its normalization the same way, `norm=<spec from models.norms.NORMS>`, and
(where it reads images) `input_norm=<spec from INPUT_NORMS>`. To add a model family, write
one module here whose builders carry `@MODELS.register("name")`, and import it below.
"""
from __future__ import annotations

from torch import nn

from ..registry import Registry, Spec

MODELS = Registry("model", context=("dataset",))


def build_model(spec: Spec, dataset) -> nn.Module:
    """Build a model from a config section {"name": ..., **options} for `dataset`."""
    return MODELS.build(spec, "model", dataset=dataset)


from . import linear, mlp, lenet, vgg  # noqa: E402,F401  (register the families)
from . import resnet, wrn, simple_cnn  # noqa: E402,F401  (CIFAR ResNets, WideResNets, Table 15's CNN)
from . import imagenet, bagnet  # noqa: E402,F401  (torchvision's ImageNet models, BagNets)
from .norms import INPUT_NORMS, NORMS, make_norm  # noqa: E402,F401
