"""One YAML loader and one error format for every config file: experiment, site and node.

The loader refuses a key given twice (plain YAML keeps the last one silently). Models derive from
``StrictModel`` (pydantic, ``extra="forbid"``, frozen), and ``validate`` turns pydantic's errors into one
``ConfigError`` in the format every config error has::

    FILE: KEY: PROBLEM
      fix: HOW TO FIX IT

A model may list ``unused_keys``: keys older files carry that nothing reads; they are refused like any
unknown key, with a fix that says so.
"""

from __future__ import annotations

import os
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError

from ..errors import ConfigError
from ..suggest import did_you_mean

__all__ = ["StrictModel", "load_yaml", "parse_yaml", "validate", "config_error", "key_path", "problem", "one_of",
           "yaml_problem", "CONFIG_KEY"]

M = TypeVar("M", bound=BaseModel)
_PROBLEM = "medsplit_problem"
#: what a config key looks like; anything else (a data file's line read as a key) is never repeated in an error
CONFIG_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,47}")
# what a value should be, in a site administrator's words, by pydantic error type
_WANTED = {"int_type": "an integer", "int_from_float": "a whole number", "int_parsing": "an integer",
           "float_type": "a number", "float_parsing": "a number", "finite_number": "a finite number",
           "bool_type": "true or false", "bool_parsing": "true or false", "string_type": "text",
           "tuple_type": "a list", "list_type": "a list", "set_type": "a list", "dict_type": "a mapping",
           "model_type": "a mapping", "model_attributes_type": "a mapping", "dataclass_type": "a mapping",
           "none_required": "empty (null)"}
_BOUNDS = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}


def problem(message: str, fix: str) -> PydanticCustomError:
    """What a model's own validator raises: the problem and its fix, reported at the validator's key."""
    return PydanticCustomError(_PROBLEM, message.replace("{", "{{").replace("}", "}}"), {"fix": fix})


def one_of(options: Sequence[str], *, upper: bool = False) -> Callable[[str], str]:
    """A check for ``Annotated[StrictStr, AfterValidator(one_of(...))]``: one of ``options``, with did-you-mean.

    With ``upper`` the value is matched case-insensitively and kept upper-case (DICOM modality names).
    """

    def check(value: str) -> str:
        text = value.upper() if upper else value
        if text not in options:
            raise problem(f"{value!r} is not one of {', '.join(options)}{did_you_mean(text, options)}",
                          f"use one of: {', '.join(options)}")
        return text

    return check


class StrictModel(BaseModel):
    """A config section: unknown keys are errors, values are checked, nothing is coerced from the wrong type.

    Fields use pydantic's strict types (``StrictInt``, ``StrictBool``, ...) where YAML could give another
    type; lists are accepted for tuples because YAML has no tuple.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False, arbitrary_types_allowed=True)

    #: keys that older files carry and nothing reads: key -> why it is not needed
    unused_keys: ClassVar[Mapping[str, str]] = {}


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML that refuses a key given twice."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        k = loader.construct_object(key_node, deep=deep)
        if k in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {k!r} appears twice (first on line {seen[k] + 1})" if isinstance(k, str)
                and CONFIG_KEY.fullmatch(k) else f"a key appears twice (first on line {seen[k] + 1})",
                key_node.start_mark)
        seen[k] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def config_error(path: Path | str | None, key: str, problem: str, fix: str | None = None) -> ConfigError:
    """The one format: ``FILE: KEY: PROBLEM`` and the fix on its own line."""
    where = f"{path}: " if path else ""
    return ConfigError(f"{where}{key or '(top level)'}: {problem}", hint=fix)


def yaml_problem(exc: yaml.YAMLError) -> str:
    """What is wrong and where (line, column), never the text there: a file opened by mistake may be a
    site's data file, and its lines are patients (PyYAML's own message quotes the offending line)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or type(exc).__name__
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}"


def parse_yaml(text: str, path: Path | str | None = None, what: str = "file") -> Any:
    """YAML text to Python values, refusing duplicate keys; a syntax error names the line, never its text."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise config_error(path, "(YAML)", f"not valid YAML: {yaml_problem(exc)}",
                           f"fix the YAML syntax of this {what} at the line shown (is it the {what}?)") from None


def load_yaml(path: str | os.PathLike[str], what: str = "config file", example: str | None = None) -> Any:
    """Read a YAML file; a missing file says what it should be."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist", hint=example or f"pass the path of the {what}")
    return parse_yaml(path.read_text(encoding="utf-8"), path, what)


def key_path(loc: tuple[int | str, ...]) -> str:
    """('sites', 0, 'modalities', 'image') -> 'sites[0].modalities.image'.

    A key that does not look like a config key (a data file's line read as one) is not repeated.
    """
    out = ""
    for part in loc:
        if not isinstance(part, int) and not CONFIG_KEY.fullmatch(str(part)):
            part = "<a key that is not a config key, not shown>"
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 4] + " ..."


def _fix_for(err: ErrorDetails, model: type[BaseModel], loc: tuple[int | str, ...]) -> tuple[str, str]:
    """(problem, fix) for one pydantic error, in the words a site administrator needs."""
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    here = _annotation_at(model, loc)
    if kind == "extra_forbidden":
        key = str(loc[-1])
        parent = _annotation_at(model, loc[:-1])
        allowed = _keys_of(parent)
        unused = getattr(parent, "unused_keys", {}) if _is_model(parent) else {}
        if key in unused:
            return f"unknown key: '{key}' is not used ({unused[key]})", f"delete '{key}'; nothing reads it"
        return (f"unknown key{did_you_mean(key, allowed)}",
                f"remove it, or use one of the keys allowed here: {', '.join(allowed)}" if allowed else "remove it")
    if kind == "missing":
        field = _field_at(model, loc)
        about = f" ({field.description})" if field is not None and field.description else ""
        return "is required", f"add '{loc[-1]}: {_example(model, loc)}'{about}"
    if kind in _BOUNDS:
        bound, limit = _BOUNDS[kind], next(iter(ctx.values()), "?")
        limit = f"{limit:g}" if isinstance(limit, float) else limit
        return f"{_show(value)} is out of range: it must be {bound} {limit}", f"give a value {bound} {limit}"
    if kind in ("literal_error", "enum"):
        expected = str(ctx.get("expected", ""))
        return f"{_show(value)} is not one of {expected}{did_you_mean(str(value), _words(expected))}", \
            f"use one of {expected}"
    if kind in ("too_short", "too_long"):
        n, want = ctx.get("actual_length"), ctx.get("min_length" if kind == "too_short" else "max_length")
        what = "is empty" if n == 0 else f"has {n} item{'s' if n != 1 else ''}"
        fix = f"give {'at least' if kind == 'too_short' else 'at most'} {want} item{'s' if want != 1 else ''}"
        return what, fix + (f", e.g. {_example(model, loc)}" if _has_example(model, loc) else "")
    if kind in ("string_too_short",):
        return "is empty", f"write e.g. {_example(model, loc)}"
    if kind in _WANTED:
        wanted = _WANTED[kind]
        fix = f"write {wanted}" + (f", e.g. {_example(model, loc)}" if _has_example(model, loc) else "")
        if wanted == "a mapping":
            keys = _keys_of(here)
            fix = "write it as 'key: value' lines" + (f"; allowed keys: {', '.join(keys)}" if keys else "")
        return f"{_show(value)} is not {wanted}", fix
    if kind == "value_error":
        return str(err["msg"]).removeprefix("Value error, "), "see the example in the documentation of this file"
    shown = f" (got {_show(value)})" if value is not None and not isinstance(value, Mapping) else ""
    return f"{err['msg']}{shown}", "see the example in the documentation of this file"


def _words(expected: str) -> list[str]:
    return [w.strip(" '\"") for w in expected.replace(" or ", ",").split(",") if w.strip(" '\"")]


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _keys_of(annotation: Any) -> list[str]:
    return [f.alias or n for n, f in annotation.model_fields.items()] if _is_model(annotation) else []


def _unwrap(annotation: Any) -> Any:
    """Optional[X] / Annotated[X, ...] -> X (the one non-None member of a union)."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _annotation_at(model: Any, loc: tuple[int | str, ...]) -> Any:
    """The annotation of the value at ``loc`` (following models, lists, tuples and dicts), or None."""
    current = _unwrap(model)
    for part in loc:
        if _is_model(current):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = field.annotation
        else:
            origin, args = typing.get_origin(current), typing.get_args(current)
            if origin in (list, tuple, set, frozenset) and args:
                current = args[0]
            elif origin in (dict, Mapping) and len(args) == 2:
                current = args[1]
            else:
                return None
        current = _unwrap(current)
    return current


def _field_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> Any:
    """The pydantic FieldInfo of the innermost field on ``loc``, or None."""
    for n in range(len(loc), 0, -1):
        parent = _annotation_at(model, loc[:n - 1])
        if _is_model(parent) and str(loc[n - 1]) in parent.model_fields:
            return parent.model_fields[str(loc[n - 1])]
    return None


def _has_example(model: type[BaseModel], loc: tuple[int | str, ...]) -> bool:
    field = _field_at(model, loc)
    return bool(field is not None and field.examples)


def _example(model: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    """The field's first example (``Field(examples=[...])``), written as YAML, else '...'."""
    field = _field_at(model, loc)
    if field is None or not field.examples:
        return "..."
    return str(yaml.safe_dump(field.examples[0], default_flow_style=True, width=1000)).strip().removesuffix("\n...")


def _clean(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """Drop pydantic's validator and union tags from an error location."""
    return tuple(p for p in loc if not (isinstance(p, str) and p.startswith(("function-", "tagged-union"))))


def validate(model: type[M], data: Any, path: Path | str | None = None, *, context: Mapping[str, Any] | None = None,
             prefix: str = "") -> M:
    """``model`` from parsed YAML; the first problem becomes a ConfigError naming file, key and fix.

    ``prefix`` is where ``data`` sits in its file (a section validated on its own). An unknown key is
    reported before anything else: a misspelt key also makes the right one look missing.
    """
    if data is None:
        raise config_error(path, prefix or "(top level)", "is empty" if prefix else "the file is empty",
                           "start from the example in the documentation of this file")
    if not isinstance(data, Mapping):
        raise config_error(path, prefix or "(top level)", f"expected a mapping of keys, got {type(data).__name__}",
                           "write it as 'key: value' lines")
    try:
        return model.model_validate(data, context=dict(context or {}))
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        loc = _clean(err["loc"])
        key_error = bool(loc) and loc[-1] == "[key]"
        if key_error:
            loc = loc[:-1]
        if err["type"] == _PROBLEM:
            what, fix = err["msg"], str((err.get("ctx") or {}).get("fix"))
        else:
            what, fix = _fix_for(err, model, loc)
        if key_error and err["type"] != _PROBLEM:
            what = f"the key {_show(err.get('input'))} is not text"
            fix = "write the key as a name, e.g. image"
        raise config_error(path, key_path((prefix, *loc) if prefix else loc), what, fix) from None
