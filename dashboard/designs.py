"""Designs (experiment mappings being drafted) stored as YAML under RUNS/designs: they outlive a reload and every
tab sees the same ones. A draft may be invalid: it is stored as written, and the page shows the engine's verdict."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from medsplit.config.loader import parse_yaml
from medsplit.errors import ConfigError

from .settings import check_run_name

__all__ = ["DESIGNS_DIR", "Designs", "Draft"]

DESIGNS_DIR = "designs"


_SOURCE = "# source: "  # first line of a design loaded from a file: relative paths and errors refer to that file


class Draft:
    """One stored design: its name, the mapping, the file it was loaded from (if any), and a revision (a hash of
    the stored text)."""

    def __init__(self, name: str, data: dict[str, Any], text: str) -> None:
        self.name = name
        self.data = data
        self.text = text
        first = text.split("\n", 1)[0]
        self.source = first[len(_SOURCE):] if first.startswith(_SOURCE) else None
        self.rev = hashlib.sha1(text.encode()).hexdigest()[:16]


class Designs:
    """The designs under ``runs/designs``, one YAML file each, named like runs (no '/' or '..')."""

    def __init__(self, runs: Path) -> None:
        self.dir = Path(runs) / DESIGNS_DIR

    def _path(self, name: str) -> Path:
        return self.dir / f"{check_run_name(name)}.yaml"

    def names(self) -> list[str]:
        """Stored designs, the most recently written first."""
        if not self.dir.is_dir():
            return []
        files = sorted(self.dir.glob("*.yaml"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
        return [p.stem for p in files]

    def read(self, name: str) -> Draft | None:
        path = self._path(name)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        data = parse_yaml(text, path, "design")
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path}: (top level): a design is a mapping of keys, not {type(data).__name__}",
                              hint="delete the file, or write it as 'key: value' lines")
        return Draft(name, dict(data), text)

    def write(self, name: str, data: Mapping[str, Any], source: str | None = None) -> Draft:
        """Store ``data`` as it is (atomically: a reader never sees half a file), and the file it came from."""
        path = self._path(name)
        text = (f"{_SOURCE}{source}\n" if source else "") + \
            yaml.safe_dump(dict(data), sort_keys=False, default_flow_style=None)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        return Draft(name, dict(data), text)

    def rename(self, old: str, new: str) -> None:
        """Move a design to a new name; an existing design of that name is never overwritten."""
        src, dst = self._path(old), self._path(new)
        if dst.exists():
            raise ConfigError(f"a design named '{new}' exists already", hint="choose another experiment name")
        os.replace(src, dst)
