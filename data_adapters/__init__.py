"""Site data for medsplit: DICOM and EHR files to MONAI-transformed samples, data reports, synthetic cohorts."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Public name -> submodule. Loaded on first use, so that `medsplit --help` (which mounts
# the data commands) does not pay for importing MONAI, pandas and pydicom.
_EXPORTS = {
    # site configuration and the data a site trains on
    "SiteConfig": "config", "DicomModality": "config", "TableModality": "config", "SplitConfig": "config",
    "load_site_config": "config", "parse_site_config": "config", "LabelSpec": "labels",
    "open_site_data": "site_data", "SiteFiles": "site_data", "SiteDataset": "site_data", "split_of": "site_data",
    # reports
    "DataReport": "report", "Rejected": "report", "REJECT_REASONS": "report",
    # DICOM
    "DICOM_MODALITIES": "dicom", "SiteDicomReader": "dicom", "LoadDicomd": "dicom", "read_dicom": "dicom",
    "check_dicom": "dicom", "classify_exception": "dicom",
    "PipelineConfig": "transforms", "AugmentConfig": "transforms", "default_pipeline": "transforms",
    "build_transforms": "transforms",
    "ImageRecord": "manifest", "read_manifest": "manifest", "discover_studies": "manifest",
    "write_manifest": "manifest",
    "PreparedImaging": "imaging", "ImagingDataset": "imaging", "prepare_imaging": "imaging",
    # tables
    "TableSpec": "ehr", "MissingRules": "ehr", "PreparedTable": "ehr", "TableDataset": "ehr",
    "prepare_table": "ehr", "read_table": "ehr",
    # synthetic cohorts, the data check
    "synth_cohort": "synth", "SynthResult": "synth", "synth_for_experiment": "synth_study", "run_check": "check",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'data_adapters' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from .check import run_check
    from .config import DicomModality, SiteConfig, SplitConfig, TableModality, load_site_config, parse_site_config
    from .dicom import DICOM_MODALITIES, LoadDicomd, SiteDicomReader, check_dicom, classify_exception, read_dicom
    from .ehr import MissingRules, PreparedTable, TableDataset, TableSpec, prepare_table, read_table
    from .imaging import ImagingDataset, PreparedImaging, prepare_imaging
    from .labels import LabelSpec
    from .manifest import ImageRecord, discover_studies, read_manifest, write_manifest
    from .report import REJECT_REASONS, DataReport, Rejected
    from .site_data import SiteDataset, SiteFiles, open_site_data, split_of
    from .synth import SynthResult, synth_cohort
    from .synth_study import synth_for_experiment
    from .transforms import AugmentConfig, PipelineConfig, build_transforms, default_pipeline
