"""
Settings as dataclasses: the one home of every default.

Each configurable part of the package (a model's architecture, training, the
training of a prior over codes, evaluation) declares a :class:`Config`
subclass whose fields are its settings. A field is documented by the string
literal under it (an attribute docstring, as Sphinx reads them); the command
line builds its options from the fields, with that text as the help, so a
default and its explanation exist in exactly one place.

A config is stored as ``dataclasses.asdict(config)`` (in checkpoints and in a
run folder's ``config.json``) and rebuilt with :meth:`Config.from_dict`,
which checks every name and value: the stored dict *is* the specification
of what was built, so a checkpoint rebuilds its model without any other
record. Values keep their types throughout (tuples of ints, ``None``); no
setting takes a round trip through a string.
"""

import ast
import dataclasses
import functools
import inspect
import math
import numbers
import textwrap
import typing
from typing import Any, Callable, ClassVar, Dict, Mapping, Optional, Tuple, Type, TypeVar


class ConfigError(ValueError):
    """A setting that does not exist or whose value is not allowed."""


def limits(
    *,
    choices: Optional[Tuple] = None,
    minimum: Optional[float] = None,
    maximum: Optional[float] = None,
    above: Optional[float] = None,
    below: Optional[float] = None,
    what: Optional[str] = None,
) -> dict:
    """
    The limits of a value, as :func:`check_value` applies them (to a setting,
    or to an option of a command-line verb).

    :param choices: the allowed values, for names of registered things.
    :param minimum: the smallest allowed value (inclusive).
    :param maximum: the largest allowed value (inclusive): every size and
        count has one, so that an absurd value is refused by name before
        anything is allocated.
    :param above: the value must be strictly greater than this.
    :param below: the value must be strictly less than this.
    :param what: how error messages name a value (default: its name), e.g.
        ``"binarization"``.
    """
    return dict(choices=choices, minimum=minimum, maximum=maximum, above=above, below=below, what=what)


def setting(
    default: Any, *, aliases: Tuple[str, ...] = (), derived: bool = False, since: Optional[str] = None,
    before: Any = dataclasses.MISSING, **value_limits: Any
) -> Any:
    """
    A dataclass field with the checks :class:`Config` applies to its value.

    :param default: the default value (immutable: numbers, strings, tuples, None).
    :param aliases: other command-line spellings of the option (kept for
        command lines written for earlier versions), e.g. ``("--guide",)``.
    :param bool derived: taken from the data set (shapes, class counts), not
        chosen by the user: no command-line option.
    :param since: the version that added the setting: a stored record
        written before it (without the setting) is complete with ``before``.
    :param before: how versions before ``since`` behaved, when that is not
        the default (default: the default).
    :param value_limits: the value's :func:`limits`.
    """
    if before is not dataclasses.MISSING and since is None:
        raise ValueError("before says how versions before `since` behaved: give since too")
    metadata = dict(limits(**value_limits), aliases=aliases, derived=derived, since=since)
    if since is not None:
        metadata["before"] = default if before is dataclasses.MISSING else before
    return dataclasses.field(default=default, metadata=metadata)


SEED = limits(minimum=0, maximum=2**32 - 1)
"""The limits of every seed: what :func:`pyro.set_rng_seed` (which seeds numpy too) accepts."""

FLOAT32_MAX = 3.4028234663852886e38
FLOAT32_TINY = 1.1754943508222875e-38


@functools.lru_cache(maxsize=None)
def field_docs(cls: type) -> Dict[str, str]:
    """
    The attribute docstrings of a dataclass and its bases: for each field,
    the string literal that follows its declaration.

    :return: ``{field name: text}``, for the fields that have one.
    """
    docs: Dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):  # no source (e.g. a class built at run time)
            continue
        body = typing.cast(ast.ClassDef, ast.parse(source).body[0]).body
        for node, following in zip(body, body[1:]):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                docs[node.target.id] = " ".join(inspect.cleandoc(following.value.value).split())
    return docs


def field_types(cls: type) -> Dict[str, Any]:
    """The resolved type annotation of every field of a dataclass."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def optional_inner(annotation: Any) -> Tuple[Any, bool]:
    """``(T, True)`` for ``Optional[T]``, ``(annotation, False)`` otherwise."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Union and type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        return inner, True
    return annotation, False


def _convert(name: str, annotation: Any, value: Any) -> Any:
    """``value`` as the field's type (lists become tuples, ints become floats), or ConfigError."""
    inner, optional = optional_inner(annotation)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{name} must be set, got None")
    if dataclasses.is_dataclass(inner):
        config_class = typing.cast(Type[Config], inner)  # a setting's dataclass is a Config
        if isinstance(value, config_class):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be a {config_class.__name__} or a dict of its settings, got {value!r}")
        return config_class.from_dict(value)
    if typing.get_origin(inner) is tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)):
            raise ConfigError(f"{name} must be a sequence of integers, got {value!r}")
        return tuple(_convert(name, typing.get_args(inner)[0], v) for v in value)
    if inner is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
        return value
    if inner is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        return int(value)
    if inner is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        return float(value)
    if inner is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {value!r}")
        return value
    return value


def check_value(name: str, value: Any, metadata: Mapping[str, Any]) -> None:
    """
    Check a value (or each value of a tuple) against its :func:`limits`
    (:func:`value_problem`).

    :raises ConfigError: naming ``name`` and what is wrong.
    """
    problem = value_problem(value, metadata, name)
    if problem:
        raise ConfigError(problem)


def value_problem(value: Any, metadata: Mapping[str, Any], name: Optional[str] = None) -> Optional[str]:
    """
    What is wrong with a value (or a tuple of values) by its :func:`limits`,
    or None. Every number must also be usable in float32 arithmetic: finite,
    at most about 3.4e38 in size and, unless zero, at least about 1.2e-38
    (so that it neither overflows nor silently becomes 0 on the device).

    :param name: the value's name, to begin the message with (None: the
        message begins with "must").
    """
    prefix = "" if name is None else f"{name} "
    for v in value if isinstance(value, tuple) else (value,):
        if v is None or not isinstance(v, (numbers.Real, str)) or isinstance(v, bool):
            continue
        if metadata.get("choices") is not None and v not in metadata["choices"]:
            return f"unknown {metadata.get('what') or name or 'value'} {v!r}; choose one of {', '.join(map(str, metadata['choices']))}"
        if isinstance(v, str):
            continue
        if isinstance(v, float) and not math.isfinite(v):
            return f"{prefix}must be a finite number, got {v}"
        if not within(v, metadata):
            return f"{prefix}{describe_limits(metadata)}, got {v}"
        if isinstance(v, float) and v != 0 and not FLOAT32_TINY <= abs(v) <= FLOAT32_MAX:
            return f"{prefix}must be between {FLOAT32_TINY:.2g} and {FLOAT32_MAX:.2g} in size (float32), got {v}"
    return None


def within(value: Any, metadata: Mapping[str, Any]) -> bool:
    """Whether a number lies within its :func:`limits`."""
    low, high, above, below = (metadata.get(k) for k in ("minimum", "maximum", "above", "below"))
    return (
        (low is None or value >= low) and (high is None or value <= high)
        and (above is None or value > above) and (below is None or value < below)
    )


def describe_limits(metadata: Mapping[str, Any]) -> str:
    """The numeric :func:`limits` in words, e.g. ``"must be in [1, 4096]"``."""
    low, high, above, below = (_show(metadata.get(k)) for k in ("minimum", "maximum", "above", "below"))
    left = f"[{low}" if low is not None else f"({above}" if above is not None else None
    right = f"{high}]" if high is not None else f"{below})" if below is not None else None
    if left and right:
        return f"must be in {left}, {right}"
    if low is not None:
        return f"must be >= {low}"
    if above is not None:
        return f"must be > {above}"
    if high is not None:
        return f"must be <= {high}"
    return f"must be < {below}"


def _show(bound: Any) -> Optional[str]:
    """A limit as written: integers exactly, other numbers in ``%g`` form."""
    if bound is None or isinstance(bound, int):
        return None if bound is None else str(bound)
    return f"{bound:g}"


_ConfigT = TypeVar("_ConfigT", bound="Config")


@dataclasses.dataclass
class Config:
    """
    Base class of every settings dataclass. On construction each field's
    value is converted to the field's type (a list to a tuple, an int to a
    float) and checked against the field's :func:`setting` limits, raising
    :class:`ConfigError` naming the setting; subclasses add checks that
    involve several fields in :meth:`check`.
    """

    def __post_init__(self) -> None:
        types = field_types(type(self))
        for f in dataclasses.fields(self):
            value = _convert(f.name, types[f.name], getattr(self, f.name))
            check_value(f.name, value, f.metadata)
            object.__setattr__(self, f.name, value)
        self.check()

    def check(self) -> None:
        """Checks that involve several settings (none by default); raise :class:`ConfigError`."""

    @classmethod
    def from_dict(cls: Type[_ConfigT], data: dict) -> _ConfigT:
        """
        Rebuild a config from ``asdict(config)`` (or any dict of its settings;
        missing ones take their defaults).

        :raises ConfigError: for a name that is not a setting of ``cls``, or
            a value it does not allow.
        """
        if not isinstance(data, dict):
            raise ConfigError(f"the settings of {cls.__name__} must be a dict, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"{cls.__name__} has no setting {unknown[0]!r}; its settings are {', '.join(sorted(names))}")
        return cls(**data)

    def to_dict(self) -> dict:
        """``dataclasses.asdict(self)``: what checkpoints and ``config.json`` store."""
        return dataclasses.asdict(self)

    # Settings that earlier versions stored and this one replaced: each name
    # maps the stored value to the settings that now say the same.
    retired: ClassVar[Dict[str, Callable[[Any], dict]]] = {}

    @classmethod
    def with_newer_defaults(cls, record: dict) -> dict:
        """
        ``record`` (a stored :meth:`to_dict`) in this version's terms: each
        :attr:`retired` setting replaced by what now says the same, and the
        settings added since it was written (``since``) completed with how
        earlier versions behaved (``before``).
        """
        if not isinstance(record, dict):
            return record
        record = dict(record)
        for name, translate in cls.retired.items():
            if name in record:
                record = {**translate(record.pop(name)), **record}
        return {**{f.name: f.metadata["before"] for f in dataclasses.fields(cls) if f.metadata.get("since")}, **record}

    @classmethod
    def from_record(cls: Type[_ConfigT], record: dict) -> _ConfigT:
        """Rebuild a config from a stored record, possibly of an earlier version (:meth:`with_newer_defaults`, then :meth:`from_dict`)."""
        return cls.from_dict(cls.with_newer_defaults(record))

    def replace(self: _ConfigT, **changes: Any) -> _ConfigT:
        """A copy with some settings changed (and checked)."""
        return dataclasses.replace(self, **changes)
