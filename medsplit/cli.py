"""The `medsplit` command line."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .errors import MedsplitError
from .presets import PRESETS
NODE_TRANSPORTS = ["local", "gloo", "rpc"]

__all__ = ["main", "build_parser"]

_DESCRIPTION = """\
medsplit trains one neural network across hospitals without sharing raw patient data (split learning).
Each site runs the first layers on its own data; only cut-layer activations and gradients cross.

commands:
  demo     train a preset topology on a synthetic cohort of DICOM and EHR files and print metrics, bytes
           sent per party, FLOPs per step and the audit of every tensor that crossed a party boundary
  run      train an experiment (YAML) with every party on this machine, in-process or as processes
  server   run the server of an experiment (hosts the rendezvous and the run store), or a relay
  site     run a site node: reads its local data, joins the server, trains its segments
  audit    summarise what left a site, from its audit log
  predict  run a trained model forward on the sites' data; predictions stay at the labels' site
  data     check a site's data (DICOM, EHR tables) exactly as training reads it: `medsplit data check`
  synth    write a synthetic hospital cohort: DICOM files, EHR CSVs, site YAMLs and an experiment YAML
  dashboard  open the web dashboard on localhost: design topologies, launch runs, watch them (no data shown)

Run `medsplit COMMAND --help` for a command's options.
"""

_DEMO_EPILOG = """\
presets:
  vanilla     site encoder -> server; the site sends its labels to the server
  ushaped     site head -> server body -> site tail; labels never leave the site
  vertical    CT at one site, EHR and labels at another; the server merges their cuts (--merge, --ushaped)
  multitask   one site's encoder feeds a diagnosis head and a mortality head on two servers
  multihop    site -> relay -> server, one segment each
  horizontal  --sites sites with different patients train one client segment in turn, handing weights on
  splitfed    --sites sites train client copies in parallel; the copies are averaged every epoch

examples:
  medsplit demo --preset ushaped --transport local --epochs 3
  medsplit demo --preset vertical --transport local --ushaped --nopeek 0.5 --json run.json
  medsplit demo --preset splitfed --sites 4 --data memory

data:
  By default the demo writes a synthetic cohort (real DICOM files, EHR CSVs, site YAMLs) under --workdir
  once, reads it back through each site's data pipeline (MONAI transforms, cached), aligns vertical sites
  by private set intersection, and trains from the files. --data memory trains on tensors made in memory.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medsplit", description=_DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    from . import __version__

    parser.add_argument("--version", action="version", version=f"medsplit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    demo = sub.add_parser("demo", help="train a preset on a synthetic cohort of DICOM and EHR files",
                          description="Train a preset topology on synthetic patients and report metrics, "
                                      "bytes, FLOPs and the audit.",
                          epilog=_DEMO_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    demo.add_argument("--preset", choices=list(PRESETS), default="vertical", help="topology (default: vertical)")
    demo.add_argument("--transport", choices=NODE_TRANSPORTS, default="gloo",
                      help="how parties talk: 'gloo' starts the server and each site as processes on 127.0.0.1 "
                           "(default); 'rpc' likewise over torch.distributed.rpc; 'local' runs every party in "
                           "this process")
    demo.add_argument("--nopeek", type=float, default=0.0, metavar="ALPHA",
                      help="add ALPHA * dCor(raw input, cut activations) to every site's loss (default: 0, off)")
    demo.add_argument("--epochs", type=int, default=5, metavar="N", help="training epochs (default: 5)")
    demo.add_argument("--seed", type=int, default=0, metavar="S", help="seed for data, weights and batches")
    demo.add_argument("--json", metavar="PATH", help="write the run summary as JSON to PATH")
    demo.add_argument("--sites", type=int, default=3, metavar="N",
                      help="sites for horizontal and splitfed (default: 3)")
    demo.add_argument("--ushaped", action="store_true",
                      help="vertical only: keep the labels at their site (the server returns its output)")
    demo.add_argument("--merge", choices=["concat", "sum", "mean"], default="concat",
                      help="vertical only: how the server merges the sites' cuts (default: concat)")
    demo.add_argument("--batch-size", type=int, default=32, metavar="B", help="rows per step (default: 32)")
    demo.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate for every party (default: 1e-3)")
    demo.add_argument("--patients", type=int, default=600, metavar="P",
                      help="patients per site, about a fifth of them kept for validation (default: 600)")
    demo.add_argument("--data", choices=["files", "memory"], default="files",
                      help="train from a synthetic cohort of files (default) or from tensors made in memory")
    demo.add_argument("--workdir", default="runs/demo-data", metavar="DIR",
                      help="where --data files writes (and reuses) the cohort (default: runs/demo-data)")
    demo.add_argument("--executor", choices=["sequential", "threaded"], default="sequential",
                      help="local transport only: run parties in one thread, or one thread each")
    demo.add_argument("--run-dir", metavar="DIR",
                      help="write the run store (DIR/run.sqlite: metrics, bytes, status; no data) for the dashboard")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(func=_demo)

    run = sub.add_parser("run", help="train an experiment with every party on this machine",
                         description="Train the experiment in EXP.yaml with every party on this machine, for "
                                     "researchers who simulate a deployment on copies of the data. Each site's "
                                     "data is read through its own site YAML; vertical sites are aligned by PSI.")
    run.add_argument("experiment", metavar="EXP.yaml", help="the experiment file (e.g. from `medsplit synth`)")
    run.add_argument("--transport", choices=NODE_TRANSPORTS, default="local",
                     help="'local': every party in this process (default); 'gloo' or 'rpc': each party as its own "
                          "process on 127.0.0.1")
    run.add_argument("--run-dir", metavar="DIR",
                     help="where to write the run store (default: the experiment's server.run_dir)")
    run.add_argument("--json", metavar="PATH", help="write the run summary as JSON to PATH")
    run.add_argument("--executor", choices=["sequential", "threaded"], default="sequential",
                     help="local transport only: run parties in one thread, or one thread each")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(func=_run)

    server = sub.add_parser("server", help="run the server of an experiment (or a relay party)",
                            description="Run the experiment's server: it hosts the rendezvous (HOST:PORT from the "
                                        "experiment's server section), authenticates every party, writes the run "
                                        "store, and trains the server's segments. With --party, run another "
                                        "non-site party (a multihop relay, a second server).")
    server.add_argument("--experiment", required=True, metavar="EXP.yaml", help="the experiment file")
    server.add_argument("--party", help="the party to run (default: the host server)")
    server.add_argument("--host", help="the host's address (default: the experiment's server.host)")
    server.add_argument("--port", type=int, help="the rendezvous port (default: the experiment's server.port)")
    server.add_argument("--run-dir", metavar="DIR", help="checkpoints and run store (default: server.run_dir)")
    server.add_argument("--transport", choices=["gloo", "rpc"], default="gloo",
                        help="gloo (default, across institutions) or rpc (one trust domain: it unpickles)")
    server.add_argument("--fresh", action="store_true", help="ignore checkpoints from an earlier run here")
    server.add_argument("--json", metavar="PATH", help="host only: write the run summary as JSON to PATH")
    server.set_defaults(func=_server)

    site = sub.add_parser("site", help="run a site node on this site's data",
                          description="Run a site node: read the local data as `medsplit data check` does, "
                                      "answer the server's challenge, and train this site's segments. Only "
                                      "declared cut tensors leave; each one is appended to DIR/audit.jsonl.")
    site.add_argument("--config", required=True, metavar="SITE.yaml", help="the site's YAML (data and node:)")
    site.add_argument("--experiment", metavar="EXP.yaml", help="the experiment (default: node.experiment)")
    site.add_argument("--server", metavar="HOST:PORT", help="the server (default: node.server)")
    site.add_argument("--party", help="this site's party in the topology (default: from the experiment)")
    site.add_argument("--run-dir", metavar="DIR", help="checkpoints and audit log (default: node.run_dir)")
    site.add_argument("--transport", choices=["gloo", "rpc"], default="gloo", help="as the server's")
    site.add_argument("--fresh", action="store_true", help="ignore checkpoints from an earlier run here")
    site.set_defaults(func=_site)

    audit = sub.add_parser("audit", help="summarise a site's audit log",
                           description="Summarise SITE_DIR/audit.jsonl: every tensor that left the site, by "
                                       "destination and kind, with bytes and shapes; flags labels and anything "
                                       "a site should not send.")
    audit.add_argument("site_dir", metavar="SITE_DIR", help="the site node's run directory (or the .jsonl file)")
    audit.add_argument("--json", metavar="PATH", help="also write the summary as JSON to PATH")
    audit.set_defaults(func=_audit)

    predict = sub.add_parser("predict", help="predict with a trained split model",
                             description="Load every party's last checkpoint from RUN_DIR and run the topology "
                                         "forward over each site's data (its site YAML); each task's predictions "
                                         "are written at the site that owns its labels.")
    predict.add_argument("experiment", metavar="EXP.yaml", help="the experiment the model was trained with")
    predict.add_argument("--run-dir", required=True, metavar="DIR", help="the training run's directory")
    predict.add_argument("--out", required=True, metavar="DIR", help="where to write predictions, per site")
    predict.set_defaults(func=_predict)

    from data_adapters.check import add_data_commands

    add_data_commands(sub)

    from dashboard.serve import add_dashboard_command

    add_dashboard_command(sub)
    return parser


def _demo(args: argparse.Namespace) -> int:
    from .demo import DemoOptions, run_demo, write_json

    opts = DemoOptions(preset=args.preset, transport=args.transport, epochs=args.epochs, seed=args.seed,
                       nopeek=args.nopeek, sites=args.sites, ushaped=args.ushaped, merge=args.merge,
                       batch_size=args.batch_size, lr=args.lr, patients=args.patients, executor=args.executor,
                       data=args.data, workdir=args.workdir, run_dir=args.run_dir,
                       progress=not args.quiet and sys.stderr.isatty())
    try:
        summary = run_demo(opts)
    except MedsplitError as exc:
        if args.json:
            write_json({"preset": args.preset, "transport": args.transport, "seed": args.seed,
                        "epochs": args.epochs, "status": "failed", "error": str(exc)}, args.json)
        raise
    if args.json:
        write_json(summary, args.json)
        print(f"summary written to {args.json}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from .demo import write_json
    from .experiment import load_experiment
    from .launch import run_processes
    from .run import run_in_process

    exp = load_experiment(args.experiment)
    run_dir = args.run_dir or exp.server.run_dir
    try:
        if args.transport == "local":
            summary = run_in_process(exp, transport=args.transport, run_dir=run_dir, executor=args.executor,
                                     progress=not args.quiet and sys.stderr.isatty())
        else:
            summary = run_processes(exp.path, transport=args.transport, run_dir=run_dir)
    except MedsplitError as exc:
        if args.json:
            write_json({"experiment": str(exp.path), "transport": args.transport, "status": "failed",
                        "error": str(exc)}, args.json)
        raise
    print(f"run store: {run_dir}")
    if args.json:
        write_json(summary, args.json)
        print(f"summary written to {args.json}")
    return 0


def _server(args: argparse.Namespace) -> int:
    from .demo import write_json
    from .launch import run_node, server_options

    opts = server_options(args.experiment, party=args.party, host=args.host, port=args.port, run_dir=args.run_dir,
                          fresh=args.fresh, transport=args.transport)
    summary = run_node(opts)
    if summary is not None and args.json:
        write_json(summary, args.json)
    return 0


def _site(args: argparse.Namespace) -> int:
    from .launch import run_node, site_options

    run_node(site_options(args.config, experiment=args.experiment, server=args.server, party=args.party,
                          run_dir=args.run_dir, fresh=args.fresh, transport=args.transport))
    return 0


def _audit(args: argparse.Namespace) -> int:
    import json

    from .auditlog import render_audit, summarise_audit

    summary = summarise_audit(args.site_dir)
    print(render_audit(summary))
    if args.json:
        from pathlib import Path

        Path(args.json).write_text(json.dumps(summary, indent=2))
    return 1 if summary["unexpected"] else 0


def _predict(args: argparse.Namespace) -> int:
    from .experiment import load_experiment
    from .predict import predict_in_process

    predict_in_process(load_experiment(args.experiment), args.run_dir, args.out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MedsplitError as exc:
        print(f"medsplit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
