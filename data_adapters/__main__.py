"""`python -m data_adapters data check ...` / `python -m data_adapters synth ...` without the medsplit CLI."""

from .check import main

raise SystemExit(main())
