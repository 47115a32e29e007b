"""One tiny registry used for datasets, backbones, modules, heads, losses and methods.

A registry maps a name (as written in a config file) to a class or factory::

    DATASETS = Registry("dataset")

    @DATASETS.register("sysu-mm01")
    class SYSUMM01: ...

    DATASETS.get("sysu-mm01")      # -> the class
    DATASETS.build("sysu-mm01", root="...")

Unknown names raise :class:`KeyError` with one sentence listing what is registered.

Parts named in a config are built through one checked path, :meth:`Registry.build_checked` (or
:meth:`Registry.check` to validate before building): an unknown name, an unknown parameter or a value of
the wrong type raises one :class:`~vireid.errors.ConfigError` sentence naming the config key, the bad
name and the valid ones. Parameters are checked against the constructor's signature
(:func:`accepted_parameters`, :func:`check_kwargs`), so configs stay typed without a schema per part.

The registries start empty: vireid's own parts are registered by importing :mod:`vireid.builtins` (the
one registration point; the trainer, the workflows and the CLI do), users' parts by their plugins
(:mod:`vireid.plugins`). ``vireid list`` prints every registry.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from vireid.config import _coerce as coerce
from vireid.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object table with a decorator for registration."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            key = name or getattr(obj, "__name__", None)
            if not key:
                raise ValueError(f"cannot register an unnamed {self.kind}; pass a name")
            if key in self._items and self._items[key] is not obj:
                raise ValueError(f"{self.kind} {key!r} is already registered")
            self._items[key] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none (vireid's own parts are registered by importing vireid.builtins)"
            raise KeyError(f"unknown {self.kind} {name!r}; registered: {known}") from None

    def lookup(self, name: str, where: str) -> T:
        """:meth:`get` for a name from a config: an unknown name raises :class:`ConfigError`
        ``"{where}: unknown <kind> 'x'; registered: ..."`` (``where`` e.g. ``"config key 'model.method'"``)."""
        try:
            return self.get(name)
        except KeyError as err:
            raise ConfigError(f"{where}: {err.args[0]}") from None

    def check(self, name: str, params: dict | None, key: str, *, where: str | None = None,
              skip: tuple[str, ...] = ()) -> tuple[T, dict]:
        """The registered ``name`` and its ``params`` checked against its constructor (:func:`check_kwargs`;
        ``key`` is the params' dotted config key, ``skip`` parameters the caller fills in itself)."""
        obj = self.lookup(name, where or f"config key '{key}'")
        return obj, check_kwargs(obj, dict(params or {}), key, skip=skip)

    def build_checked(self, name: str, params: dict | None = None, *, key: str, where: str | None = None,
                      skip: tuple[str, ...] = (), **fixed: Any) -> Any:
        """Build ``name`` from config ``params`` checked by :meth:`check`, plus the ``fixed`` arguments the
        caller supplies (e.g. ``num_classes``, listed in ``skip`` so a config cannot set them)."""
        obj, checked = self.check(name, params, key, where=where, skip=skip)
        accepted, _, _ = accepted_parameters(obj)
        missing = [n for n, p in accepted.items()
                   if p.default is inspect.Parameter.empty and n not in checked and n not in fixed]
        if missing:
            raise ConfigError(f"config key '{key}' lacks {', '.join(missing)}, which {self.kind} {name!r} needs; "
                              f"its parameters are {', '.join(sorted(n for n in accepted if n not in skip)) or 'none'}")
        return obj(**checked, **fixed)  # type: ignore[operator]

    def summary(self, name: str) -> str:
        """One line about the registered ``name`` (what ``vireid list`` prints): its ``description``
        attribute when it has one (e.g. a protocol setting), else the first sentence of its docstring."""
        obj = self.get(name)
        description = getattr(obj, "description", None)
        if isinstance(description, str) and description.strip():
            return " ".join(description.split())
        doc = inspect.getdoc(obj) if (inspect.isclass(obj) or inspect.isroutine(obj)) else None
        return first_sentence(" ".join((doc or "").strip().split("\n\n")[0].split()))

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        factory = self.get(name)
        return factory(*args, **kwargs)  # type: ignore[operator]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


def first_sentence(text: str) -> str:
    """``text`` up to the first full stop outside parentheses that a capital letter follows (so "eq. 3",
    "Sec. 3.2" and "(Ye et al., 2021)" do not end it)."""
    depth = 0
    for i, char in enumerate(text):
        depth += (char in "([") - (char in ")]")
        if char == "." and depth <= 0 and text[i + 1:i + 2] == " " and text[i + 2:i + 3].isupper():
            return text[:i + 1]
    return text


def accepted_parameters(func: Any) -> tuple[dict[str, inspect.Parameter], dict[str, Any], bool]:
    """The keyword parameters ``func`` takes, their type hints, and whether it takes any name.

    A class whose ``__init__`` forwards ``**kwargs`` to its base class (``super().__init__(...,
    **kwargs)``) also takes the base's parameters: the classes of the MRO are read in order until
    one without ``**kwargs``, a subclass's own parameter (with its own default) winning over the
    base's. So a method that only changes a few of its base's defaults lists just those.
    """
    owners = [c for c in func.__mro__ if "__init__" in vars(c)] if inspect.isclass(func) else [func]
    params: dict[str, inspect.Parameter] = {}
    hints: dict[str, Any] = {}
    accepts_any = False
    for owner in owners:
        target = owner.__init__ if inspect.isclass(owner) else owner
        sig = inspect.signature(target)
        for name, p in sig.parameters.items():
            if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                params.setdefault(name, p)
        try:
            for name, tp in typing.get_type_hints(target).items():
                hints.setdefault(name, tp)
        except Exception:  # noqa: BLE001 - unresolvable annotations: skip type checks
            pass
        accepts_any = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
        if not accepts_any:
            break
    return params, hints, accepts_any


def check_kwargs(func: Any, kwargs: dict, key: str, skip: tuple[str, ...] = ()) -> dict:
    """Check free-form ``kwargs`` (e.g. ``model.params``) against ``func``'s signature.

    Unknown names are rejected with the dotted key and the accepted names; values are checked
    against the parameter annotations where those are simple types. A class's ``**kwargs``
    forwarded to its base accept the base's parameters (:func:`accepted_parameters`).
    """
    accepted, hints, accepts_any = accepted_parameters(func)
    params = {n: p for n, p in accepted.items() if n not in skip}
    out = {}
    for name, value in kwargs.items():
        if name not in params:
            if accepts_any:
                out[name] = value
                continue
            valid = ", ".join(sorted(params)) or "none"
            raise ConfigError(f"unknown config key '{key}.{name}'; valid keys there: {valid}")
        tp = hints.get(name)
        out[name] = _coerce_loose(value, tp, f"{key}.{name}") if tp is not None else value
    return out


def _coerce_loose(value: Any, tp: Any, key: str) -> Any:
    """Like :func:`_coerce` but lets unusual annotations (tuples, Literals, callables) through."""
    origin = typing.get_origin(tp)
    simple = (int, float, bool, str, type(None))
    if tp in simple:
        return coerce(value, tp, key)
    if origin in (typing.Union, types.UnionType) and all(a in simple for a in typing.get_args(tp)):
        return coerce(value, tp, key)
    if (tp is tuple or origin is tuple) and isinstance(value, list):
        return tuple(value)
    return value
