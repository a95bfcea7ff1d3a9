"""`python -m dashboard [--root DIR] [--runs DIR] [--port P] [--host H]`: what `medsplit dashboard` runs."""

import argparse
import sys

from medsplit.errors import MedsplitError

from .serve import serve

parser = argparse.ArgumentParser(prog="medsplit dashboard")
parser.add_argument("--runs", default=None)
parser.add_argument("--root", default=None)
parser.add_argument("--port", type=int, default=8501)
parser.add_argument("--host", default="127.0.0.1")
args = parser.parse_args()
try:
    sys.exit(serve(args.runs, args.port, args.host, root=args.root))
except MedsplitError as exc:
    print(f"medsplit dashboard: error: {exc}", file=sys.stderr)
    sys.exit(2)
