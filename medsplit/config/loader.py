"""One YAML loader and one error format for every config file: experiment, site and node.

The loader refuses a key given twice (plain YAML keeps the last one silently). Models derive from
``StrictModel`` (pydantic, ``extra="forbid"``, frozen), and ``validate`` turns pydantic's errors into one
``ConfigError`` in the format every config error has::

    FILE: KEY: PROBLEM
      fix: HOW TO FIX IT
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import PydanticCustomError

from ..errors import ConfigError
from ..suggest import did_you_mean

__all__ = ["StrictModel", "load_yaml", "parse_yaml", "validate", "config_error", "key_path", "problem"]

M = TypeVar("M", bound=BaseModel)
_PROBLEM = "medsplit_problem"


def problem(message: str, fix: str) -> PydanticCustomError:
    """What a model's own validator raises: the problem and its fix, reported at the validator's key."""
    return PydanticCustomError(_PROBLEM, message.replace("{", "{{").replace("}", "}}"), {"fix": fix})


class StrictModel(BaseModel):
    """A config section: unknown keys are errors, values are checked, nothing is coerced from the wrong type."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False, arbitrary_types_allowed=True)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML that refuses a key given twice."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        k = loader.construct_object(key_node, deep=deep)
        if k in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {k!r} appears twice (first on line {seen[k] + 1})", key_node.start_mark)
        seen[k] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def config_error(path: Path | str | None, key: str, problem: str, fix: str | None = None) -> ConfigError:
    """The one format: ``FILE: KEY: PROBLEM`` and the fix on its own line."""
    where = f"{path}: " if path else ""
    return ConfigError(f"{where}{key or '(top level)'}: {problem}", hint=fix)


def parse_yaml(text: str, path: Path | str | None = None, what: str = "file") -> Any:
    """YAML text to Python values, refusing duplicate keys; a syntax error names the line."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise config_error(path, "(YAML)", f"not valid YAML: {' '.join(str(exc).split())}",
                           f"fix the YAML syntax of this {what} at the line shown") from None


def load_yaml(path: str | os.PathLike[str], what: str = "config file", example: str | None = None) -> Any:
    """Read a YAML file; a missing file says what it should be."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist", hint=example or f"pass the path of the {what}")
    return parse_yaml(path.read_text(encoding="utf-8"), path, what)


def key_path(loc: tuple[int | str, ...]) -> str:
    """('sites', 0, 'modalities', 'image') -> 'sites[0].modalities.image'."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _fix_for(err: Mapping[str, Any], model: type[BaseModel], loc: tuple[int | str, ...]) -> tuple[str, str]:
    """(problem, fix) for one pydantic error, in the words a site administrator needs."""
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    if kind == "extra_forbidden":
        allowed = _allowed_keys(model, loc[:-1])
        key = str(loc[-1])
        return (f"unknown key{did_you_mean(key, allowed)}",
                f"remove it, or use one of the keys allowed here: {', '.join(allowed)}" if allowed else "remove it")
    if kind == "missing":
        return "is required", f"add '{loc[-1]}: ...'"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        bound = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}[kind]
        limit = next(iter(ctx.values()), "?")
        return f"{value!r} is out of range: it must be {bound} {limit}", f"give a value {bound} {limit}"
    if kind in ("literal_error", "enum"):
        expected = ctx.get("expected", "")
        return f"{value!r} is not one of {expected}{did_you_mean(str(value), _words(expected))}", \
            f"use one of {expected}"
    if kind.endswith("_type") or kind.endswith("_parsing"):
        return f"{value!r} is not {err['msg'].lower().removeprefix('input should be ')}", \
            f"write {err['msg'].lower().removeprefix('input should be ')}"
    return f"{err['msg']} (got {value!r})" if value is not None and not isinstance(value, Mapping) \
        else str(err["msg"]), "see the example in the documentation of this file"


def _words(expected: str) -> list[str]:
    return [w.strip(" '\"") for w in expected.replace(" or ", ",").split(",") if w.strip(" '\"")]


def _allowed_keys(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The keys the model accepts at ``loc`` (following nested models, lists and dicts)."""
    current: Any = model
    for part in loc:
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return []
            current = _inner_model(field.annotation)
        else:
            current = _inner_model(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or n for n, f in current.model_fields.items()]
    return []


def _inner_model(annotation: Any) -> Any:
    """The model type inside Optional/list/tuple/dict annotations, else the annotation."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        inner = _inner_model(arg)
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            return inner
    return annotation


def validate(model: type[M], data: Any, path: Path | str | None = None, *, context: Mapping[str, Any] | None = None,
             prefix: str = "") -> M:
    """``model`` from parsed YAML; the first problem becomes a ConfigError naming file, key and fix.

    ``prefix`` is where ``data`` sits in its file (a section validated on its own).
    """
    if data is None:
        raise config_error(path, "(top level)", "the file is empty", "start from an example in the documentation")
    if not isinstance(data, Mapping):
        raise config_error(path, "(top level)", f"expected a mapping of keys, got {type(data).__name__}",
                           "write the file as 'key: value' lines")
    try:
        return model.model_validate(data, context=dict(context or {}))
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith(("function-", "tagged-union"))))
        if err["type"] == _PROBLEM:
            what, fix = err["msg"], (err.get("ctx") or {}).get("fix")
        else:
            what, fix = _fix_for(err, model, loc)
        raise config_error(path, key_path((prefix, *loc) if prefix else loc), what, fix) from None
