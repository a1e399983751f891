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
from typing import Any, Dict, Optional, Tuple


class ConfigError(ValueError):
    """A setting that does not exist or whose value is not allowed."""


def setting(
    default: Any,
    *,
    choices: Optional[Tuple] = None,
    minimum: Optional[float] = None,
    above: Optional[float] = None,
    below: Optional[float] = None,
    aliases: Tuple[str, ...] = (),
    derived: bool = False,
    what: Optional[str] = None,
):
    """
    A dataclass field with the checks :class:`Config` applies to its value.

    :param default: the default value (immutable: numbers, strings, tuples, None).
    :param choices: the allowed values, for names of registered things.
    :param minimum: the smallest allowed value (inclusive).
    :param above: the value must be strictly greater than this.
    :param below: the value must be strictly less than this.
    :param aliases: other command-line spellings of the option (kept for
        command lines written for earlier versions), e.g. ``("--guide",)``.
    :param bool derived: taken from the data set (shapes, class counts), not
        chosen by the user: no command-line option.
    :param what: how error messages name a value of the setting (default:
        the setting's name), e.g. ``"binarization"``.
    """
    metadata = dict(choices=choices, minimum=minimum, above=above, below=below, aliases=aliases, derived=derived, what=what)
    return dataclasses.field(default=default, metadata=metadata)


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
        body = ast.parse(source).body[0].body
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


def optional_inner(annotation) -> Tuple[Any, bool]:
    """``(T, True)`` for ``Optional[T]``, ``(annotation, False)`` otherwise."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Union and type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        return inner, True
    return annotation, False


def _convert(name: str, annotation, value):
    """``value`` as the field's type (lists become tuples, ints become floats), or ConfigError."""
    inner, optional = optional_inner(annotation)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{name} must be set, got None")
    if dataclasses.is_dataclass(inner):
        if isinstance(value, inner):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be a {inner.__name__} or a dict of its settings, got {value!r}")
        return inner.from_dict(value)
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


def _check_value(name: str, value, metadata) -> None:
    values = value if isinstance(value, tuple) else (value,)
    for v in values:
        if v is None or not isinstance(v, (numbers.Real, str)) or isinstance(v, bool):
            continue
        if metadata.get("choices") is not None and v not in metadata["choices"]:
            raise ConfigError(f"unknown {metadata.get('what') or name} {v!r}; choose one of {', '.join(map(str, metadata['choices']))}")
        if isinstance(v, str):
            continue
        if isinstance(v, float) and math.isnan(v):
            raise ConfigError(f"{name} must be a number, got nan")
        if metadata.get("minimum") is not None and not v >= metadata["minimum"]:
            raise ConfigError(f"{name} must be >= {metadata['minimum']}, got {v}")
        if metadata.get("above") is not None and not v > metadata["above"]:
            raise ConfigError(f"{name} must be > {metadata['above']}, got {v}")
        if metadata.get("below") is not None and not v < metadata["below"]:
            raise ConfigError(f"{name} must be < {metadata['below']}, got {v}")


@dataclasses.dataclass
class Config:
    """
    Base class of every settings dataclass. On construction each field's
    value is converted to the field's type (a list to a tuple, an int to a
    float) and checked against the field's :func:`setting` limits, raising
    :class:`ConfigError` naming the setting; subclasses add checks that
    involve several fields in :meth:`check`.
    """

    def __post_init__(self):
        types = field_types(type(self))
        for f in dataclasses.fields(self):
            value = _convert(f.name, types[f.name], getattr(self, f.name))
            _check_value(f.name, value, f.metadata)
            object.__setattr__(self, f.name, value)
        self.check()

    def check(self) -> None:
        """Checks that involve several settings (none by default); raise :class:`ConfigError`."""

    @classmethod
    def from_dict(cls, data: dict):
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

    def replace(self, **changes):
        """A copy with some settings changed (and checked)."""
        return dataclasses.replace(self, **changes)
