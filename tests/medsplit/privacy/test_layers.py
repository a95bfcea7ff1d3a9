"""The core never imports the applications: no module under medsplit/ names data_adapters, sites or dashboard."""

from __future__ import annotations

import ast
from pathlib import Path

import medsplit

APPS = ("data_adapters", "sites", "dashboard")


def test_core_imports_no_application():
    root = Path(medsplit.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            offenders += [f"{path.relative_to(root)}: {n}" for n in names if n.split(".")[0] in APPS]
    assert not offenders, offenders
    assert (root / "privacy" / "card.py").exists()  # the scan covers the privacy package
