"""`medsplit data check` and `medsplit synth`: argparse commands the medsplit CLI mounts with add_data_commands."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import TextIO

from medsplit.errors import ConfigError, DataError, MedsplitError

from .report import DataReport

__all__ = ["add_data_commands", "run_check", "run_synth", "main"]

EXIT_OK, EXIT_NOTHING_LOADED, EXIT_CONFIG = 0, 1, 2

_CHECK_HELP = """\
Read a site's data exactly as training would, then print what was found, loaded and set aside.

  medsplit data check --config site.yaml [--json report.json]
  medsplit data check DICOM_DIR --modality CT [--spatial-size 64 64] [--json report.json]

With --config, every modality key of the site YAML is read (DICOM through the configured
pipeline, filling the site's cache; tables with their missing-value rules) and the report
lists tensor shapes and label balance. With a folder, DICOM studies are discovered by
StudyInstanceUID/SeriesInstanceUID and decoded with the default pipeline of --modality.

Exit status: 0 data usable, 1 nothing could be loaded for some key, 2 configuration error.
The report holds counts and local paths, never patient IDs."""

_SYNTH_HELP = """\
Write synthetic hospital cohorts as real files: per site, DICOM images (CT/MR with realistic
tags) and/or an EHR CSV, a site YAML pointing at them, and OUT/experiment.yaml tying the sites
together. A latent outcome drives a lesion in the images and lab values in the EHR (labels
'diagnosis' and 'mortality'); each site has its own scanner offset, noise and age mix.

  horizontal: every site holds images + EHR + labels of its own patients.
  vertical:   site_1 CT, site_2 EHR and labels, site_3.. MR; sites share --overlap of patients.

Example: medsplit synth --out cohorts/demo --sites 3 --patients 200 --seed 0"""


def add_data_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``data`` (with ``check``) and ``synth`` on a subparsers object; each sets ``func(args) -> int``."""
    data = subparsers.add_parser("data", help="check a site's data before joining a run",
                                 description="Commands for a site's local data.")
    data_sub = data.add_subparsers(dest="data_command", metavar="{check}")
    data_sub.required = True
    check = data_sub.add_parser("check", help="read the data as training would and print the data report",
                                description=_CHECK_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    check.add_argument("folder", nargs="?", type=Path, help="a folder of DICOM files to check (instead of --config)")
    check.add_argument("--config", type=Path, metavar="SITE.yaml", help="the site YAML to check")
    check.add_argument("--modality", help="with FOLDER: the DICOM modality, one of CT, MR, CR, DX")
    check.add_argument("--spatial-size", type=int, nargs="+", metavar="N", default=[64, 64],
                       help="with FOLDER: the model input size, H W or D H W (default: 64 64)")
    check.add_argument("--json", type=Path, metavar="PATH", help="also write the report as JSON to PATH")
    check.set_defaults(func=_check_cmd)

    synth = subparsers.add_parser("synth", help="write synthetic hospital cohorts as DICOM + EHR files",
                                  description=_SYNTH_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    synth.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (created)")
    synth.add_argument("--sites", type=int, default=3, help="number of sites (default 3)")
    synth.add_argument("--patients", type=int, default=200, help="patients per site (default 200)")
    synth.add_argument("--seed", type=int, default=0, help="random seed; same seed, same files (default 0)")
    synth.add_argument("--layout", choices=("horizontal", "vertical"), default="horizontal",
                       help="who holds what (default horizontal)")
    synth.add_argument("--slices", type=int, default=1, help="slices per series; >1 writes 3D series folders (default 1)")
    synth.add_argument("--size", type=int, default=32, help="image rows and columns (default 32)")
    synth.add_argument("--overlap", type=float, default=0.8,
                       help="vertical: fraction of each site's patients held by every site (default 0.8)")
    synth.add_argument("--image-modality", choices=("CT", "MR"), default="CT",
                       help="horizontal: modality of the images (default CT)")
    synth.set_defaults(func=_synth_cmd)


def run_check(*, config: Path | None = None, folder: Path | None = None, modality: str | None = None,
              spatial_size: tuple[int, ...] = (64, 64), json_path: Path | None = None,
              out: TextIO | None = None) -> int:
    """Build, print and optionally write the data report; returns the exit status."""
    out = out or sys.stdout
    try:
        report = _build_report(config, folder, modality, tuple(spatial_size))
    except ConfigError as e:
        print(f"configuration error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    except DataError as e:
        print(f"data error: {e}", file=sys.stderr)
        return EXIT_NOTHING_LOADED
    print(report.render(), file=out)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(report.to_json() + "\n", encoding="utf-8")
        print(f"wrote {json_path}", file=out)
    empty = [k for k, m in report.modalities.items() if m["loaded"] == 0]
    if report.loaded == 0 or empty:
        print(f"nothing could be loaded for: {', '.join(empty) or 'any key'}", file=sys.stderr)
        return EXIT_NOTHING_LOADED
    return EXIT_OK


def _build_report(config: Path | None, folder: Path | None, modality: str | None,
                  spatial_size: tuple[int, ...]) -> DataReport:
    from .config import load_site_config, parse_site_config
    from .site_data import open_site_data

    if (config is None) == (folder is None):
        raise ConfigError("give either --config SITE.yaml or a DICOM folder",
                          hint="medsplit data check --config site.yaml, or medsplit data check DIR --modality CT")
    if config is not None:
        if modality:
            raise ConfigError("--modality is read from the site YAML when --config is given",
                              hint="drop --modality, or check a bare folder instead")
        return open_site_data(load_site_config(config))[1]
    from .dicom import DICOM_MODALITIES

    if not modality or modality.upper() not in DICOM_MODALITIES:
        raise ConfigError(f"checking a folder needs --modality, one of {', '.join(DICOM_MODALITIES)}"
                          + (f" (got {modality!r})" if modality else ""), hint="add e.g. --modality CT")
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder", hint="give the folder that holds the DICOM files")
    if len(spatial_size) not in (2, 3) or min(spatial_size) < 1:
        raise ConfigError(f"--spatial-size takes 2 or 3 positive sizes, got {list(spatial_size)}",
                          hint="write --spatial-size H W for 2D models or --spatial-size D H W for 3D models")
    # A bare folder is checked with the default pipeline and a throw-away cache, so nothing is
    # written next to the data.
    with tempfile.TemporaryDirectory(prefix="medsplit-check-") as tmp:
        spec = {"site": folder.name or "folder",
                "modalities": {"image": {"kind": "dicom", "source": str(folder.resolve()), "modality": modality,
                                         "spatial_size": list(spatial_size), "cache_dir": tmp}}}
        cfg = parse_site_config(spec)
        report = open_site_data(cfg)[1]
    report.site = None
    report.splits = {}
    report.notes = [n for n in report.notes if "another key" not in n]
    return report


def _check_cmd(args: argparse.Namespace) -> int:
    return run_check(config=args.config, folder=args.folder, modality=args.modality,
                     spatial_size=tuple(args.spatial_size), json_path=args.json)


def run_synth(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from .synth import synth_cohort

    out = out or sys.stdout
    t0 = time.perf_counter()
    try:
        res = synth_cohort(args.out, sites=args.sites, patients=args.patients, seed=args.seed, layout=args.layout,
                           slices=args.slices, size=args.size, overlap=args.overlap,
                           image_modality=args.image_modality)
    except ValueError as e:
        print(f"configuration error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    dt = time.perf_counter() - t0
    print(f"wrote {len(res.site_configs)} sites ({args.layout}) to {res.out} in {dt:.1f} s", file=out)
    for name, path in res.site_configs.items():
        print(f"  {name}: {path}", file=out)
    print(f"experiment: {res.experiment}", file=out)
    return EXIT_OK


def _synth_cmd(args: argparse.Namespace) -> int:
    return run_synth(args)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m data_adapters.check data check ...``), as medsplit's CLI mounts it."""
    parser = argparse.ArgumentParser(prog="medsplit")
    add_data_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except MedsplitError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_CONFIG if isinstance(e, ConfigError) else EXIT_NOTHING_LOADED


if __name__ == "__main__":
    raise SystemExit(main())
