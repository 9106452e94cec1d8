"""Name -> builder registries, and calling a builder from a config section with clear errors."""
from __future__ import annotations

import inspect
from typing import Any, Callable

from .errors import BnrobustError


def validate_spec(registry: dict[str, Callable], section: str, spec: dict,
                  context: Any = ("root", "seed", "dataset", "ctx", "model", "ds")) -> None:
    """Check a config section against its builder's signature without calling it."""
    _bind(registry, section, spec, {k: None for k in context})


def call_registered(registry: dict[str, Callable], section: str, spec: dict, **context: Any) -> Any:
    """Call registry[spec["name"]] with the rest of spec as keyword arguments.

    `context` holds arguments the engine supplies (data root, seed, dataset); they are
    passed only to builders that declare them.
    """
    fn, kwargs = _bind(registry, section, spec, context)
    return fn(**kwargs)


def _bind(registry: dict[str, Callable], section: str, spec: dict, context: dict):
    if not isinstance(spec, dict) or "name" not in spec:
        raise BnrobustError(f"{section} config needs a 'name' (one of: {', '.join(sorted(registry))})")
    kwargs = dict(spec)
    name = kwargs.pop("name")
    if name not in registry:
        raise BnrobustError(f"unknown {section} {name!r}; choose from: {', '.join(sorted(registry))}")
    fn = registry[name]
    params = inspect.signature(fn).parameters
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        allowed = sorted(set(params) - set(context))
        raise BnrobustError(f"{section} {name!r} has no option {', '.join(unknown)} "
                            f"(options: {', '.join(allowed) or 'none'})")
    kwargs.update({k: v for k, v in context.items() if k in params})
    missing = [p.name for p in params.values()
               if p.default is inspect.Parameter.empty and p.name not in kwargs
               and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    if missing:
        raise BnrobustError(f"{section} {name!r} needs option(s) {', '.join(missing)}")
    return fn, kwargs
