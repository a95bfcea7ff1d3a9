"""One module per dashboard section; each exposes ``render(runs_root)``."""
