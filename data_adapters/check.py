"""What `medsplit data check` and `medsplit synth` do: the data report of a site, and synthetic cohorts."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

from medsplit.errors import ConfigError, DataError

from .report import DataReport

__all__ = ["run_check", "run_synth", "CHECK_HELP", "SYNTH_HELP", "EXIT_OK", "EXIT_NOTHING_LOADED", "EXIT_CONFIG"]

EXIT_OK, EXIT_NOTHING_LOADED, EXIT_CONFIG = 0, 1, 2

CHECK_HELP = """\
Read a site's data exactly as training would, then print what was found, loaded and set aside.

  medsplit data check --config site.yaml [--json report.json]
  medsplit data check DICOM_DIR --modality CT [--spatial-size 64 64] [--json report.json]

With --config, every modality key of the site YAML is read (DICOM through the configured
pipeline, filling the site's cache; tables with their missing-value rules) and the report
lists tensor shapes and label balance. With a folder, DICOM studies are discovered by
StudyInstanceUID/SeriesInstanceUID and decoded with the default pipeline of --modality.

Exit status: 0 data usable, 1 nothing could be loaded for some key, 2 configuration error.
The report holds counts and local paths, never patient IDs."""

SYNTH_HELP = """\
Write synthetic hospital cohorts as real files: per site, DICOM images (CT/MR with realistic
tags) and/or an EHR CSV, a site YAML pointing at them, and OUT/experiment.yaml tying the sites
together. A latent outcome drives a lesion in the images and lab values in the EHR (labels
'diagnosis' and 'mortality'); each site has its own scanner offset, noise and age mix.

  horizontal: every site holds images + EHR + labels of its own patients.
  vertical:   site_1 CT, site_2 EHR and labels, site_3.. MR; sites share --overlap of patients.

For any experiment design, --for EXP.yaml writes, for each of its sites, the files its
declared modalities need (tables of the declared width, CT/MR/CR/DX DICOM of the declared
2D or 3D shape) and the labels its tasks need (binary, multiclass, regression; text values
where the site's own YAML maps them), then DIR/experiment.yaml reading them. A site whose
`config:` names an existing site YAML gets exactly the columns, sizes and label mappings it
declares. Vertical studies share --overlap of each site's patients.

Examples: medsplit synth --out cohorts/demo --sites 3 --patients 200 --seed 0
          medsplit synth --for experiments/vertical-two-ehr.yaml --out runs/cohorts/two-ehr"""


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
    assert folder is not None  # exactly one of config and folder is given (checked above)
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


def run_synth(out_dir: Path, *, patients: int, seed: int, overlap: float = 0.8, for_experiment: Path | None = None,
              out: TextIO | None = None, **layout: Any) -> int:
    """Write a synthetic cohort (``layout``: sites, layout, slices, size, image_modality; or ``for_experiment``)
    and print where; returns the exit status."""
    out = out or sys.stdout
    t0 = time.perf_counter()
    try:
        if for_experiment is not None:
            if layout:
                flags = ", ".join(f"--{k.replace('_', '-')}" for k in layout)
                raise ConfigError(f"{flags}: the experiment says what each site holds when --for is given",
                                  hint=f"drop {flags}, or drop --for to write a --layout cohort")
            from .synth_study import synth_for_experiment  # reads site YAMLs: imports the DICOM stack

            res = synth_for_experiment(for_experiment, out_dir, patients=patients, seed=seed, overlap=overlap)
            what = f"for experiment {for_experiment}"
        else:
            from .synth import synth_cohort

            layout = {"sites": 3, "layout": "horizontal", **layout}
            res = synth_cohort(out_dir, patients=patients, seed=seed, overlap=overlap, **layout)
            what = f"({layout['layout']})"
    except ConfigError as e:
        print(f"configuration error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    dt = time.perf_counter() - t0
    print(f"wrote {len(res.site_configs)} sites {what} to {res.out} in {dt:.1f} s", file=out)
    for name, path in res.site_configs.items():
        print(f"  {name}: {path}", file=out)
    print(f"experiment: {res.experiment}", file=out)
    return EXIT_OK
