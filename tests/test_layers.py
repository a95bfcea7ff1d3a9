"""Layers import downward only: the core knows no application, site data knows no application.

Every import counts, including one inside a function (an import hidden in a function is still an import).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: what each top-level package may not import
FORBIDDEN = {
    "medsplit": ("data_adapters", "sites", "dashboard"),
    "data_adapters": ("sites", "dashboard"),
    "sites": ("dashboard",),  # `medsplit dashboard` starts it as a program: a site's image leaves it out
    "dashboard": ("sites",),  # it starts runs as programs (`python -m sites.cli`), never imports them
}


def _imports(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in a file, relative ones resolved against its package."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = path.relative_to(root).with_suffix("").parts[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                out.append((node.lineno, ".".join([*base, node.module] if node.module else base)))
            elif node.module:
                out.append((node.lineno, node.module))
    return out


def _violations(root: Path) -> list[str]:
    found = []
    for top, forbidden in FORBIDDEN.items():
        for path in sorted((root / top).rglob("*.py")):
            for line, module in _imports(path, root):
                if module.split(".")[0] in forbidden:
                    found.append(f"{path.relative_to(root)}:{line} imports {module}")
    return found


def test_no_module_imports_upward():
    assert _violations(ROOT) == []


def test_the_check_sees_imports_inside_functions(tmp_path):
    """The check itself can fail: a hidden upward import in a core module is found, relative or absolute."""
    fake = tmp_path / "medsplit" / "engine"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("def f():\n    from ...sites import cli\n    import dashboard.app\n")
    assert _violations(tmp_path) == ["medsplit/engine/bad.py:2 imports sites",
                                     "medsplit/engine/bad.py:3 imports dashboard.app"]


@pytest.mark.parametrize("module", ["medsplit", "sites.cli"])
def test_the_core_and_the_cli_load_without_the_dashboard(module):
    """`medsplit --help` (and a site's node) never pulls in Streamlit."""
    import subprocess
    import sys

    code = f"import sys, {module}; sys.exit(1 if 'streamlit' in sys.modules or 'dashboard' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=120).returncode == 0
