"""The `medsplit` command line: every command's options here; each command's work in its own module."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from medsplit import __version__
from medsplit.errors import ConfigError, MedsplitError
from medsplit.topology import PRESETS
from medsplit.transport import transport_names

EXECUTORS = ["sequential", "threaded"]

__all__ = ["main", "build_parser"]

RUN_TRANSPORTS = transport_names()
NODE_TRANSPORTS = transport_names(between_processes=True)

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
  privacy  attack a preset or an experiment trained on synthetic patients and write its leakage report card
  provision  write a study's identities (a key pair per party, one folder each to hand over); revoke one
  predict  run a trained model forward on the sites' data; predictions stay at the labels' site
  data     check a site's data (DICOM, EHR tables) exactly as training reads it: `medsplit data check`
  synth    write a synthetic hospital cohort: DICOM files, EHR CSVs, site YAMLs and an experiment YAML
  dashboard  open the web dashboard on localhost: design topologies, launch runs, watch them (no data shown)

Run `medsplit COMMAND --help` for a command's options.
"""

_DEMO_EPILOG = "presets:\n" + "".join(f"  {name:<11} {spec.summary}\n" for name, spec in PRESETS.items()) + """
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
    parser.add_argument("--version", action="version", version=f"medsplit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    demo = sub.add_parser("demo", help="train a preset on a synthetic cohort of DICOM and EHR files",
                          description="Train a preset topology on synthetic patients and report metrics, "
                                      "bytes, FLOPs and the audit.",
                          epilog=_DEMO_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    demo.add_argument("--preset", choices=list(PRESETS), default="vertical", help="topology (default: vertical)")
    demo.add_argument("--transport", choices=RUN_TRANSPORTS, default="gloo",
                      help="how parties talk: 'gloo' starts the server and each site as processes on 127.0.0.1 "
                           "(default); 'rpc' likewise over torch.distributed.rpc; 'local' runs every party in "
                           "this process")
    demo.add_argument("--nopeek", type=float, default=0.0, metavar="ALPHA",
                      help="NoPeek on every site: descend dCor(raw input, cut activations) too, its gradient ALPHA "
                           "times the task's (default: 0, off; docs/privacy.md)")
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
    demo.add_argument("--executor", choices=EXECUTORS, default="sequential",
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
    run.add_argument("--transport", choices=RUN_TRANSPORTS, default="local",
                     help="'local': every party in this process (default); 'gloo' or 'rpc': each party as its own "
                          "process on 127.0.0.1")
    run.add_argument("--run-dir", metavar="DIR",
                     help="where to write the run store (default: the experiment's server.run_dir)")
    run.add_argument("--json", metavar="PATH", help="write the run summary as JSON to PATH")
    run.add_argument("--executor", choices=EXECUTORS, default="sequential",
                     help="local transport only: run parties in one thread, or one thread each")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("--resume", action="store_true",
                     help="continue a stopped run in --run-dir from its checkpoints (the last epoch end every party "
                          "saved, in-process; each party's, as processes) instead of starting afresh")
    run.add_argument("--share-imports", action="store_true",
                     help="gloo/rpc: fork every party from one process that imported torch once, so that many "
                          "sites on one machine share those pages (about half the memory per site process)")
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
    server.add_argument("--transport", choices=NODE_TRANSPORTS, default="gloo",
                        help="gloo (default, across institutions: authenticated, encrypted) or rpc (one trust "
                             "domain: it unpickles, no encryption)")
    server.add_argument("--identity", metavar="DIR", help="this party's folder from `medsplit provision` (its key "
                                                          "and the study's parties)")
    server.add_argument("--rpc-off-loopback", action="store_true",
                        help="let --transport rpc use a non-loopback address (only inside one trust domain)")
    server.add_argument("--fresh", action="store_true", help="ignore checkpoints from an earlier run here")
    server.add_argument("--json", metavar="PATH", help="host only: write the run summary as JSON to PATH")
    server.add_argument("--predict", action="store_true",
                        help="predict with the run's last checkpoints (in --run-dir) instead of training; every "
                             "party must be started with --predict")
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
    site.add_argument("--transport", choices=NODE_TRANSPORTS, default="gloo", help="as the server's")
    site.add_argument("--identity", metavar="DIR", help="this site's folder from `medsplit provision` (instead of "
                                                        "node.private_key, node.server_key and node.parties)")
    site.add_argument("--rpc-off-loopback", action="store_true", help="as the server's")
    site.add_argument("--fresh", action="store_true", help="ignore checkpoints from an earlier run here")
    site.add_argument("--predict", action="store_true",
                      help="predict with this site's last checkpoint instead of training; predictions of tasks whose "
                           "labels are here are written to --out")
    site.add_argument("--out", metavar="DIR", help="with --predict: where to write predictions (default: "
                                                   "RUN_DIR/predictions)")
    site.set_defaults(func=_site)

    audit = sub.add_parser("audit", help="summarise a site's audit log",
                           description="Summarise SITE_DIR/audit.jsonl: every tensor that left the site, by "
                                       "destination and kind, with bytes and shapes; flags labels and anything "
                                       "a site should not send.")
    audit.add_argument("site_dir", metavar="SITE_DIR", help="the site node's run directory (or the .jsonl file)")
    audit.add_argument("--json", metavar="PATH", help="also write the summary as JSON to PATH")
    audit.set_defaults(func=_audit)

    provision = sub.add_parser("provision", help="write a study's identities; revoke a party",
                               description="Write one Ed25519 key pair per party of the experiment, the list of "
                                           "parties with their fingerprints, and one folder per party to hand over "
                                           "(its private key, the server's public key to pin, the list). With "
                                           "--revoke, mark a party revoked: the server refuses it from then on.")
    provision.add_argument("out", metavar="DIR", help="the study's folder (created; must not hold a study yet)")
    provision.add_argument("--experiment", metavar="EXP.yaml", help="the experiment whose parties to provision")
    provision.add_argument("--revoke", metavar="PARTY", help="revoke PARTY in the study at DIR")
    provision.set_defaults(func=_provision)

    predict = sub.add_parser("predict", help="predict with a trained split model",
                             description="Run the trained topology forward over each site's data (its site YAML), "
                                         "each party with its last checkpoint from the training run's directory; "
                                         "each task's predictions are written at the site that owns its labels. "
                                         "With --transport gloo or rpc every party runs as its own process, as in "
                                         "a deployment (`medsplit server --predict`, `medsplit site --predict`).")
    predict.add_argument("experiment", metavar="EXP.yaml", help="the experiment the model was trained with")
    predict.add_argument("--run-dir", required=True, metavar="DIR", help="the training run's directory")
    predict.add_argument("--out", required=True, metavar="DIR", help="where to write predictions, per site")
    predict.add_argument("--transport", choices=RUN_TRANSPORTS, default="local",
                         help="'local': every party in this process (default); 'gloo' or 'rpc': each party as its "
                              "own process on 127.0.0.1, loading its own checkpoint")
    predict.set_defaults(func=_predict)

    _privacy_command(sub)
    _data_commands(sub)
    _dashboard_command(sub)
    return parser


_PRIVACY_EPILOG = """what it does:
  Trains the topology in this process on synthetic patients shaped like it (never a site's data), then
  attacks it: a decoder rebuilds each cut's raw input on held-out patients (SSIM for images, R² for
  tables), gradient attacks read labels that stay at a site (leak AUC), and labels sent to the server are
  reported as such. The card (card.txt, card.json, PNG figures) goes to RUN_DIR/privacy/, where the
  dashboard shows it. How to read it: docs/privacy.md.

examples:
  medsplit privacy --preset ushaped --label-defense marvell --label-strength 4
  medsplit privacy --preset vanilla --noise 1.0 --json card.json
  medsplit privacy --preset vertical --ushaped --nopeek 1 --run-dir runs/vertical-nopeek
  medsplit privacy experiments/vertical.yaml --epochs 3
"""


def _privacy_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("privacy", help="attack a topology on synthetic patients and write its report card",
                       description="The leakage report card: what the cuts and gradients of a topology give away, "
                                   "measured by attacks, with and without defenses.",
                       epilog=_PRIVACY_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", nargs="?", metavar="EXP.yaml",
                   help="an experiment whose topology and shapes to use (instead of --preset)")
    p.add_argument("--preset", choices=list(PRESETS), help="a preset topology (default: ushaped)")
    p.add_argument("--nopeek", type=float, default=0.0, metavar="ALPHA",
                   help="NoPeek on every cut: the dCor gradient at ALPHA times the task's (default: 0, off)")
    p.add_argument("--nopeek-scale", choices=["relative", "absolute"], default="relative",
                   help="relative (default): ALPHA times the task gradient's norm; absolute: the paper's "
                        "loss + ALPHA * dCor")
    p.add_argument("--noise", type=float, default=0.0, metavar="SIGMA",
                   help="Gaussian noise on every cut, SIGMA times the cut's RMS (default: 0, off)")
    p.add_argument("--clip", type=float, default=0.0, metavar="C",
                   help="clip each patient's cut to L2 norm C, before the noise (default: 0, off)")
    p.add_argument("--label-defense", choices=["marvell", "max_norm"], metavar="NAME",
                   help="perturb the gradients a label-owning site sends back: marvell or max_norm")
    p.add_argument("--label-strength", type=float, metavar="S",
                   help="Marvell's noise power, S times |g1 - g0|^2 (default: 1)")
    p.add_argument("--epochs", type=int, default=5, metavar="N", help="training epochs (default: 5)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed for data, weights, batches and attacks")
    p.add_argument("--json", metavar="PATH", help="write the run summary with its privacy section as JSON to PATH")
    p.add_argument("--run-dir", metavar="DIR",
                   help="run store and card (DIR/privacy/) (default: runs/privacy-NAME-seedS)")
    p.add_argument("--ushaped", action="store_true", help="vertical preset: keep the labels at their site")
    p.add_argument("--merge", choices=["concat", "sum", "mean"], default="concat", help="vertical preset: merge")
    p.add_argument("--sites", type=int, default=3, metavar="N", help="sites for horizontal and splitfed (default 3)")
    p.add_argument("--patients", type=int, default=480, metavar="P",
                   help="training patients per site; a quarter as many more are held out (default: 480)")
    p.add_argument("--aux-patients", type=int, default=480, metavar="P",
                   help="the attacker's auxiliary patients, same distribution, other people (default: 480)")
    p.add_argument("--batch-size", type=int, default=32, metavar="B", help="rows per step (default: 32)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default: 1e-3)")
    p.add_argument("--decoder-steps", type=int, default=400, metavar="N",
                   help="training steps of the attacker's decoder (default: 400)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_privacy)


def _data_commands(sub: argparse._SubParsersAction) -> None:
    from data_adapters.check import CHECK_HELP, SYNTH_HELP

    data = sub.add_parser("data", help="check a site's data before joining a run",
                          description="Commands for a site's local data.")
    data_sub = data.add_subparsers(dest="data_command", metavar="{check}")
    data_sub.required = True
    check = data_sub.add_parser("check", help="read the data as training would and print the data report",
                                description=CHECK_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    check.add_argument("folder", nargs="?", type=Path, help="a folder of DICOM files to check (instead of --config)")
    check.add_argument("--config", type=Path, metavar="SITE.yaml", help="the site YAML to check")
    check.add_argument("--modality", help="with FOLDER: the DICOM modality, one of CT, MR, CR, DX")
    check.add_argument("--spatial-size", type=int, nargs="+", metavar="N", default=[64, 64],
                       help="with FOLDER: the model input size, H W or D H W (default: 64 64)")
    check.add_argument("--json", type=Path, metavar="PATH", help="also write the report as JSON to PATH")
    check.set_defaults(func=_check)

    synth = sub.add_parser("synth", help="write synthetic hospital cohorts as DICOM + EHR files",
                           description=SYNTH_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    synth.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (created)")
    synth.add_argument("--for", dest="for_experiment", type=Path, metavar="EXP.yaml",
                       help="write files for every site of this experiment (its modalities, shapes and labels) and "
                            "DIR/experiment.yaml reading them; instead of --layout")
    synth.add_argument("--sites", type=int, help="number of sites (default 3)")
    synth.add_argument("--patients", type=int, default=200, help="patients per site (default 200)")
    synth.add_argument("--seed", type=int, default=0, help="random seed; same seed, same files (default 0)")
    synth.add_argument("--layout", choices=("horizontal", "vertical"), help="who holds what (default horizontal)")
    synth.add_argument("--slices", type=int, help="slices per series; >1 writes 3D series folders (default 1)")
    synth.add_argument("--size", type=int, help="image rows and columns (default 32)")
    synth.add_argument("--overlap", type=float, default=0.8,
                       help="vertical: fraction of each site's patients held by every site (default 0.8)")
    synth.add_argument("--image-modality", choices=("CT", "MR"), help="horizontal: modality of the images (default CT)")
    synth.set_defaults(func=_synth)


def _dashboard_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dashboard", help="open the web dashboard (configure, launch and watch runs; no data shown)",
                       description="Start the Streamlit dashboard on this machine. It reads run stores (metrics, "
                                   "bytes, node status) and never shows images, per-patient rows or patient IDs.")
    p.add_argument("--root", metavar="DIR",
                   help="the only folder the page may read or write under: experiment files it loads or saves, "
                        "designs and runs (default: the runs folder)")
    p.add_argument("--runs", metavar="DIR", help="folder of run directories, inside the root (default: ROOT/runs "
                                                  "with --root, else ./runs)")
    p.add_argument("--port", type=int, default=8501, metavar="P", help="port (default: 8501)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.set_defaults(func=_dashboard)


def _check(args: argparse.Namespace) -> int:
    from data_adapters.check import run_check

    return run_check(config=args.config, folder=args.folder, modality=args.modality,
                     spatial_size=tuple(args.spatial_size), json_path=args.json)


def _synth(args: argparse.Namespace) -> int:
    from data_adapters.check import run_synth

    layout = {"sites": args.sites, "layout": args.layout, "slices": args.slices, "size": args.size,
              "image_modality": args.image_modality}
    return run_synth(args.out, patients=args.patients, seed=args.seed, overlap=args.overlap,
                     for_experiment=args.for_experiment, **{k: v for k, v in layout.items() if v is not None})


def _dashboard(args: argparse.Namespace) -> int:
    # The dashboard is an application of its own, started as one: a site's image leaves it (and Streamlit) out.
    if importlib.util.find_spec("dashboard") is None:
        raise ConfigError("the dashboard is not installed here (a site node's image leaves it out)",
                          hint="run it where the medsplit checkout and `pip install 'medsplit[dashboard]'` are")
    argv = [sys.executable, "-m", "dashboard", "--port", str(args.port), "--host", args.host,
            *(["--runs", args.runs] if args.runs else []), *(["--root", args.root] if args.root else [])]
    os.execv(argv[0], argv)
    return 1  # pragma: no cover - execv does not return



@contextmanager
def _failure_to_json(path: str | os.PathLike[str] | None, **fields: Any) -> Iterator[None]:
    """A refusal inside writes ``fields`` with status "failed" and the error to --json (when given), then goes on
    up: a script reading the file always finds how the command ended."""
    try:
        yield
    except MedsplitError as exc:
        if path:
            from .demo import write_json

            write_json({**fields, "status": "failed", "error": str(exc)}, path)
        raise


def _summary_to_json(summary: dict[str, Any], path: str | os.PathLike[str] | None) -> None:
    """The run summary to --json, when given."""
    if path:
        from .demo import write_json

        write_json(summary, path)
        print(f"summary written to {path}")


def _demo(args: argparse.Namespace) -> int:
    from .demo import DemoOptions, run_demo

    opts = DemoOptions(preset=args.preset, transport=args.transport, epochs=args.epochs, seed=args.seed,
                       nopeek=args.nopeek, sites=args.sites, ushaped=args.ushaped, merge=args.merge,
                       batch_size=args.batch_size, lr=args.lr, patients=args.patients, executor=args.executor,
                       data=args.data, workdir=args.workdir, run_dir=args.run_dir,
                       progress=not args.quiet and sys.stderr.isatty())
    with _failure_to_json(args.json, preset=args.preset, transport=args.transport, seed=args.seed,
                          epochs=args.epochs):
        summary = run_demo(opts)
    _summary_to_json(summary, args.json)
    return 0


def _privacy(args: argparse.Namespace) -> int:
    from .privacy import PrivacyOptions, run_privacy

    if args.experiment and args.preset:
        raise ConfigError("give an experiment or --preset, not both", hint="drop one of them")
    opts = PrivacyOptions(preset=args.preset or "ushaped", experiment=args.experiment, epochs=args.epochs,
                          seed=args.seed, nopeek=args.nopeek, nopeek_scale=args.nopeek_scale, noise=args.noise,
                          clip=args.clip, label_defense=args.label_defense, label_strength=args.label_strength,
                          ushaped=args.ushaped, merge=args.merge, sites=args.sites, patients=args.patients,
                          aux_patients=args.aux_patients, batch_size=args.batch_size, lr=args.lr,
                          decoder_steps=args.decoder_steps, run_dir=args.run_dir,
                          progress=not args.quiet and sys.stderr.isatty())
    with _failure_to_json(args.json, preset=opts.preset, experiment=args.experiment, seed=args.seed):
        summary = run_privacy(opts)
    _summary_to_json(summary, args.json)
    return 0


def _run(args: argparse.Namespace) -> int:
    from medsplit.config import load_experiment

    from .launch import run_processes
    from .run import run_in_process

    exp = load_experiment(args.experiment)
    run_dir = args.run_dir or exp.server.run_dir
    with _failure_to_json(args.json, experiment=str(exp.path), transport=args.transport):
        if args.transport == "local":
            summary = run_in_process(exp, transport=args.transport, run_dir=run_dir, executor=args.executor,
                                     progress=not args.quiet and sys.stderr.isatty(), resume=args.resume)
        else:
            assert exp.path is not None  # load_experiment records the file it read
            summary = run_processes(exp.path, transport=args.transport, run_dir=run_dir, fresh=not args.resume,
                                    share_imports=args.share_imports)
    print(f"run store: {run_dir}")
    _summary_to_json(summary, args.json)
    return 0


def _server(args: argparse.Namespace) -> int:
    from medsplit.runtime import run_node

    from .demo import write_json
    from .nodes import server_options

    opts = server_options(args.experiment, party=args.party, host=args.host, port=args.port, run_dir=args.run_dir,
                          fresh=args.fresh, transport=args.transport, identity=args.identity,
                          rpc_off_loopback=args.rpc_off_loopback)
    if args.predict:
        opts.predict_out = opts.run_dir / "predictions"
    summary = run_node(opts)
    if summary is not None and args.json:
        write_json(summary, args.json)
    return 0


def _site(args: argparse.Namespace) -> int:
    from medsplit.runtime import run_node

    from .nodes import site_options

    if args.out and not args.predict:
        raise ConfigError("--out is where --predict writes predictions", hint="add --predict, or drop --out")
    opts = site_options(args.config, experiment=args.experiment, server=args.server, party=args.party,
                        run_dir=args.run_dir, fresh=args.fresh, transport=args.transport, identity=args.identity,
                        rpc_off_loopback=args.rpc_off_loopback)
    if args.predict:
        opts.predict_out = Path(args.out) if args.out else opts.run_dir / "predictions"
    run_node(opts)
    return 0


def _audit(args: argparse.Namespace) -> int:
    from medsplit.wire import render_audit, summarise_audit

    summary = summarise_audit(args.site_dir)
    print(render_audit(summary))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return 1 if summary["unexpected"] else 0


def _provision(args: argparse.Namespace) -> int:
    from .provision import provision_experiment, revoke

    if args.revoke:
        if args.experiment:
            raise ConfigError("--revoke changes an existing study; --experiment is for a new one", hint="drop one")
        listing = revoke(args.out, args.revoke)
        print(f"revoked party '{args.revoke}' in study '{listing['study']}': the server refuses it once it reads "
              f"{Path(args.out) / listing['server'] / 'parties.json'} (at its next start)")
        return 0
    if not args.experiment:
        raise ConfigError("medsplit provision: --experiment is required to write a new study",
                          hint="medsplit provision DIR --experiment EXP.yaml")
    listing = provision_experiment(args.experiment, args.out)
    print(f"study '{listing['study']}': identities written to {args.out}")
    for name, entry in listing["parties"].items():
        print(f"  {name:<16} {entry['role']:<7} {entry['fingerprint']}  -> {Path(args.out) / name}/")
    print(f"hand each party its own folder; tell the sites the server's fingerprint "
          f"({listing['parties'][listing['server']]['fingerprint']}) by another channel")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from medsplit.config import load_experiment

    from .launch import run_processes
    from .predict import predict_in_process

    if args.transport == "local":
        predict_in_process(load_experiment(args.experiment), args.run_dir, args.out)
    else:
        run_processes(args.experiment, transport=args.transport, run_dir=args.run_dir, predict_out=args.out,
                      fresh=False)
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt("SIGTERM")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # SIGTERM (the dashboard's Stop, `kill`) unwinds like Ctrl-C, so that a run records that it stopped, and why.
    trains = args.command in ("run", "server", "site", "demo") and threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if trains else None
    try:
        return int(args.func(args) or 0)
    except MedsplitError as exc:
        print(f"medsplit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"medsplit {args.command}: stopped by {exc.args[0]}" if exc.args else "interrupted", file=sys.stderr)
        return 143 if exc.args == ("SIGTERM",) else 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
