"""One `Registry` type for every named thing a config can ask for (datasets, models, norms,
attacks, evaluations, trainers, experiments, executors).

A registered builder's signature *is* its config schema: each parameter's annotation (with
`Annotated[..., Field(ge=0)]` ranges and `Literal[...]` choices) is checked by pydantic in
strict mode before any work starts, defaults are filled in, and a parameter annotated with
another registry (`Annotated[Spec, NORMS]`) holds a nested spec resolved the same way. So a
resolved spec names every value the builder will see, and its hash changes with any default.
An option added to a builder after runs were stored is annotated `Annotated[..., ADDED]`: it is
left out of the resolved spec while it has its default, so the stored runs keep their hashes.
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
import re
import typing
from typing import Any, Callable, Iterator, Union

from pydantic import ConfigDict, ValidationError, create_model

from .errors import BnrobustError

Spec = Union[str, dict, None]  # a name, or {"name": ..., **options}; None for "nothing" where allowed


class _Added:
    """Marks an option added after runs were stored (see the module docstring)."""

    def __repr__(self) -> str:
        return "ADDED"


ADDED = _Added()
_STRICT = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False, arbitrary_types_allowed=True)


def close_matches(word: str, choices: list[str]) -> str:
    """' (did you mean a, b?)' or ''."""
    near = difflib.get_close_matches(str(word), choices, n=3, cutoff=0.6)
    return f" (did you mean {', '.join(near)}?)" if near else ""


def first_error(e: ValidationError) -> str:
    """A pydantic error as one line: 'key.sub: message (got value)'."""
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    got = "" if err["type"] == "missing" else f" (got {err.get('input')!r})"
    return f"{loc}: {err['msg']}{got}"


class Registry:
    """Name -> builder. `context` names the arguments the caller supplies at build time
    (the dataset, the model, ...): they are not config options."""

    def __init__(self, kind: str, context: tuple[str, ...] = (), default: str | None = None):
        self.kind, self.context, self.default = kind, set(context), default
        self._fns: dict[str, Callable] = {}
        self._versions: dict[str, int] = {}
        # name -> (pydantic model, {option: nested registry}, {ADDED option: its default})
        self._schemas: dict[str, tuple[type, dict[str, Registry], dict[str, Any]]] = {}

    def register(self, name: str, version: int = 1) -> Callable[[Callable], Callable]:
        """Decorator. Bump `version` whenever the builder's *meaning* changes (a fixed bug, a
        new algorithm): runs stored with the old version are then recomputed."""
        def deco(fn: Callable) -> Callable:
            if name in self._fns:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._fns[name], self._versions[name] = fn, version
            return fn
        return deco

    def __contains__(self, name: object) -> bool:
        return name in self._fns

    def __iter__(self) -> Iterator[str]:
        return iter(self._fns)

    def __len__(self) -> int:
        return len(self._fns)

    def names(self) -> list[str]:
        return list(self._fns)

    def items(self) -> list[tuple[str, Any]]:
        return list(self._fns.items())

    def __getitem__(self, name: str) -> Callable:
        return self.get(name)

    def reorder(self, order: list[str] | tuple[str, ...]) -> None:
        """List the entries in `order` (which must name every entry), e.g. a paper's order."""
        if sorted(order) != sorted(self._fns):
            raise ValueError(f"{self.kind} order {list(order)} does not match the entries {self.names()}")
        self._fns = {k: self._fns[k] for k in order}

    def get(self, name: str) -> Callable:
        if name not in self._fns:
            raise BnrobustError(f"unknown {self.kind} {name!r}{close_matches(name, self.names())}; "
                                f"choose from: {', '.join(self._fns)}")
        return self._fns[name]

    def describe(self, name: str) -> str:
        """The first sentence of the builder's docstring."""
        text = " ".join((inspect.getdoc(self.get(name)) or "").split("\n\n")[0].split())
        first = re.split(r"(?<=[.!?])\s+(?=[A-Z])", text)[0]  # not at "Fig. 8" or "e.g. x"
        return first if first.endswith((".", "?", "!")) else first + "."

    # -- specs -------------------------------------------------------------

    def _schema(self, name: str) -> tuple[type, dict[str, "Registry"], dict[str, Any]]:
        if name not in self._schemas:
            fn = self.get(name)
            hints = typing.get_type_hints(fn if dataclasses.is_dataclass(fn) or not inspect.isclass(fn)
                                          else fn.__init__, include_extras=True)
            fields, nested, added = {}, {}, {}
            for p in inspect.signature(fn).parameters.values():
                if p.name in self.context or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                    continue
                ann = hints.get(p.name, Any)
                sub = [m for m in getattr(ann, "__metadata__", ()) if isinstance(m, Registry)]
                if sub:
                    nested[p.name], ann = sub[0], Any
                default = p.default
                if dataclasses.is_dataclass(fn):  # the fields hold the defaults (and default factories)
                    f = {f.name: f for f in dataclasses.fields(fn)}[p.name]
                    if f.default_factory is not dataclasses.MISSING:
                        default = f.default_factory()
                    elif f.default is not dataclasses.MISSING:
                        default = f.default
                fields[p.name] = (ann, ... if default is inspect.Parameter.empty else default)
                if any(m is ADDED for m in getattr(ann, "__metadata__", ())):
                    added[p.name] = default
            self._schemas[name] = (create_model(f"{self.kind}_{name}", __config__=_STRICT, **fields), nested, added)
        return self._schemas[name]

    def resolve(self, spec: Spec, where: str | None = None) -> dict:
        """The spec with every option filled in and checked: {"name": ..., **options}.
        A bare string is a name with default options. One-line BnrobustError on any problem."""
        where = where or self.kind
        if spec is None or spec == {}:
            spec = self.default
        if isinstance(spec, str):
            spec = {"name": spec}
        if not isinstance(spec, dict) or "name" not in spec:
            if isinstance(spec, dict) and self.default is not None:
                spec = {"name": self.default, **spec}
            else:
                raise BnrobustError(f"{where} must be a name or a section with a 'name' "
                                    f"(one of: {', '.join(self._fns)}), got {spec!r}")
        opts = dict(spec)
        name = opts.pop("name")
        if not isinstance(name, str) or name not in self._fns:
            raise BnrobustError(f"{where}: unknown {self.kind} {name!r}{close_matches(name, self.names())}; "
                                f"choose from: {', '.join(self._fns)}")
        model, nested, added = self._schema(name)
        try:
            values = model(**opts).model_dump()
        except ValidationError as e:
            err = e.errors()[0]
            if err["type"] == "extra_forbidden":
                key = err["loc"][0]
                allowed = list(model.model_fields)
                raise BnrobustError(f"{where}.{key}: {self.kind} {name!r} has no option {key!r}"
                                    f"{close_matches(key, allowed)} (options: {', '.join(allowed) or 'none'})"
                                    ) from None
            raise BnrobustError(f"{where}.{first_error(e)} ({self.kind} {name!r})") from None
        for key, reg in nested.items():
            if values[key] is not None or reg.default is not None:
                values[key] = reg.resolve(values[key], f"{where}.{key}")
        for key, default in added.items():
            if values[key] == default:
                del values[key]
        return {"name": name, **values}

    def versions(self, resolved: dict) -> dict[str, int]:
        """{"kind:name": version} of a resolved spec and every spec nested in it."""
        out = {f"{self.kind}:{resolved['name']}": self._versions[resolved["name"]]}
        for key, reg in self._schema(resolved["name"])[1].items():
            if isinstance(resolved.get(key), dict):
                out.update(reg.versions(resolved[key]))
        return out

    def partial(self, spec: Spec, where: str | None = None) -> Callable[..., Any]:
        """The builder with `spec`'s options bound (resolved once): call it with the context."""
        resolved = self.resolve(spec, where)
        fn = self._fns[resolved.pop("name")]
        params = inspect.signature(fn).parameters

        def call(**context: Any) -> Any:
            return fn(**resolved, **{k: v for k, v in context.items() if k in params})
        return call

    def build(self, spec: Spec, where: str | None = None, **context: Any) -> Any:
        """Resolve `spec` and call its builder with the options plus the context arguments
        it declares."""
        return self.partial(spec, where)(**context)
