"""DICOM images and series read through MONAI's PydicomReader, with a reason for every file that cannot be used."""

from __future__ import annotations

import logging
import os
import struct
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from monai.data import PydicomReader
from monai.data.utils import orientation_ras_lps
from monai.transforms import LoadImaged
from monai.utils import ensure_tuple
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from .report import Rejected

__all__ = [
    "DICOM_MODALITIES",
    "SiteDicomReader",
    "LoadDicomd",
    "check_dicom",
    "classify_exception",
    "inspect_dicom",
    "quiet_monai_loader",
    "read_dicom",
    "read_header",
]

#: the modalities a site can declare for a DICOM key; CR and DX are both projection radiography.
DICOM_MODALITIES = ("CT", "MR", "CR", "DX")
_COMPATIBLE = {"CT": {"CT"}, "MR": {"MR"}, "CR": {"CR", "DX"}, "DX": {"CR", "DX"}}

# Modality values of objects that are never an input image, even when they carry pixel data
# (an RT dose grid or a segmentation is derived data, not an acquisition).
_NON_IMAGE_MODALITIES = {"RTPLAN", "RTSTRUCT", "RTDOSE", "RTRECORD", "RTIMAGE_PLAN", "SR", "SEG", "ECG", "HD",
                         "AU", "PR", "KO", "DOC", "REG", "FID", "RWV", "PLAN", "RAW"}
_IMAGE_SOP_WITHOUT_IMAGE_IN_NAME = {"Parametric Map Storage"}

# What to `pip install` for each family of compressed transfer syntaxes (pydicom's own list
# of missing dependencies also offers gdcm; pip wheels are the simplest route for a site).
_CODEC_PACKAGES: list[tuple[Sequence[str], str]] = [
    (pydicom.uid.JPEG2000TransferSyntaxes, "pylibjpeg pylibjpeg-openjpeg"),
    (pydicom.uid.JPEGLSTransferSyntaxes, "pylibjpeg pylibjpeg-libjpeg"),
    (pydicom.uid.JPEGTransferSyntaxes, "pylibjpeg pylibjpeg-libjpeg"),
    (pydicom.uid.RLETransferSyntaxes, "pylibjpeg pylibjpeg-rle"),
]

# MONAI 1.6 constructs an NvImgCodecPydicomReader inside every LoadImage: on machines without
# CUDA + nvImageCodec it logs one notice and warns once per LoadImage. Drop exactly those two.
_NVIMG_WARNING = r"NvImgCodecPydicomReader: nvImageCodec decoder plugin did not register"


class _DropNvImgCodecNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("nvImageCodec is not available")


logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").addFilter(_DropNvImgCodecNotice())


@contextmanager
def quiet_monai_loader() -> Iterator[None]:
    """Silence MONAI's nvImageCodec fallback warning (and only it) while building a loader."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_NVIMG_WARNING, category=UserWarning)
        yield


# ---------------------------------------------------------------------------------------------
# header checks: everything that can be decided without decoding pixels


def inspect_dicom(path: str | os.PathLike, *, modality: str | None = None, strict_modality: bool = True) -> Dataset:
    """Read one file's header (pixel data deferred) and raise ``Rejected`` unless it is a usable image.

    Checks, in order: exists, is DICOM, parses, is an image object, has pixel data, can be
    decoded by an installed codec, has finite geometry and rescale tags, matches ``modality``.
    """
    path = Path(path)
    if not path.exists():
        raise Rejected("missing", f"{path} does not exist")
    if path.is_dir():
        raise Rejected("unsupported", f"{path} is a folder, not a file")
    if not path.is_file():  # a pipe or device would block the reader forever
        raise Rejected("unsupported", f"{path} is not a regular file")
    ds = _read_header(path)
    _check_is_image(ds)
    _check_decodable(ds)
    _check_finite_tags(ds)
    if modality and strict_modality:
        found = str(ds.get("Modality", "") or "").upper()
        # A missing Modality tag cannot contradict the config; trust the site's manifest then.
        if found and found not in _COMPATIBLE.get(modality.upper(), {modality.upper()}):
            raise Rejected("wrong_modality", f"the file says Modality={found}, this key expects {modality}",
                           hint="point this key at the right series, or set pipeline.strict_modality: false")
    return ds


def _read_header(path: Path, *, stop_before_pixels: bool = False) -> Dataset:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError as e:
        raise Rejected("corrupt", f"cannot be opened: {e.strerror or e}") from e
    if head[:2] == b"\x1f\x8b":
        raise Rejected("not_dicom", "a gzip-compressed file", hint="decompress it (gunzip) first")
    try:
        # defer_size keeps pixel data on disk until it is decoded, so the checks stay cheap
        return pydicom.dcmread(path, defer_size="64 KB", stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        pass
    except Exception as e:  # noqa: BLE001 - any parse failure of a file with a DICM prefix is corruption
        raise Rejected("corrupt", f"header cannot be parsed ({_short(e)})") from e
    # Old exports omit the 128-byte preamble. Read such files anyway, but only accept what
    # looks like a dataset: forcing a text file through the parser yields random tags.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, force=True, defer_size="64 KB", stop_before_pixels=stop_before_pixels)
            plausible = any(k in ds for k in ("SOPClassUID", "Modality", "PixelData", "StudyInstanceUID"))
    except Exception as e:  # noqa: BLE001
        raise Rejected("not_dicom", f"neither a DICOM file nor a bare DICOM dataset ({_short(e)})") from e
    if not plausible:
        raise Rejected("not_dicom", "no DICOM preamble and no recognisable DICOM elements")
    return ds


def read_header(path: str | os.PathLike) -> Dataset:
    """The header only (``stop_before_pixels``), read as ``inspect_dicom`` reads it; raises ``Rejected``."""
    return _read_header(Path(path), stop_before_pixels=True)


def _sop_name(ds: Dataset) -> str:
    sop = ds.get("SOPClassUID")
    if not sop:
        return ""
    name = UID(str(sop)).name
    return "" if name == str(sop) else name  # pydicom returns the UID itself when it is unknown


def _check_is_image(ds: Dataset) -> None:
    has_pixels = any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))
    sop_name = _sop_name(ds)
    modality = str(ds.get("Modality", "") or "").upper()
    if sop_name:
        is_image = "Image Storage" in sop_name or sop_name in _IMAGE_SOP_WITHOUT_IMAGE_IN_NAME
        what = sop_name
    elif "DirectoryRecordSequence" in ds:
        is_image, what = False, "a DICOMDIR (media directory)"
    else:
        is_image = modality not in _NON_IMAGE_MODALITIES
        what = f"a Modality {modality} object" if modality else "the dataset"
    if not is_image:
        raise Rejected("not_an_image", f"{what} is not an image"
                       + (" (it carries pixel data, but derived, not acquired)" if has_pixels else ""))
    if not has_pixels:
        raise Rejected("no_pixel_data", f"{what} has no Pixel Data element",
                       hint="re-export the study with pixel data (some anonymisers strip it)")


def _transfer_syntax(ds: Dataset) -> UID | None:
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    return UID(str(ts)) if ts else None


_CONVERT = "convert the file to Explicit VR Little Endian (e.g. dcmconv +te, gdcmconv --raw)"


def _check_decodable(ds: Dataset) -> None:
    ts = _transfer_syntax(ds)
    if ts is None:
        return  # no file meta: pydicom read it as an uncompressed dataset
    try:
        compressed = ts.is_compressed
    except ValueError:
        raise Rejected("codec_missing", f"unknown transfer syntax {ts}",
                       hint=_CONVERT) from None
    if not compressed:
        return
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        raise Rejected("codec_missing", f"compressed as {ts.name} ({ts}), which pydicom cannot decode",
                       hint=_CONVERT) from None
    if not decoder.is_available:
        pkgs = next((p for family, p in _CODEC_PACKAGES if ts in family), None)
        raise Rejected("codec_missing", f"compressed as {ts.name} ({ts}) and no decoder for it is installed",
                       hint=f"pip install {pkgs}" if pkgs
                       else "install one of: " + "; ".join(decoder.missing_dependencies))


def _check_finite_tags(ds: Dataset) -> None:
    for name in ("RescaleSlope", "RescaleIntercept", "PixelSpacing", "ImagePositionPatient",
                 "ImageOrientationPatient", "SliceThickness"):
        value = ds.get(name)
        if value is None or value == "":
            continue
        try:
            arr = np.asarray([float(v) for v in ensure_tuple(value)], dtype=np.float64)
        except (TypeError, ValueError):
            raise Rejected("corrupt", f"{name} is not numeric ({value!r})") from None
        if not np.isfinite(arr).all():
            raise Rejected("non_finite", f"{name} is not finite ({value!r})")


# ---------------------------------------------------------------------------------------------
# decoding: a PydicomReader that follows MONAI's ImageReader contract


class SiteDicomReader(PydicomReader):
    """MONAI's PydicomReader with the checks a site needs: it raises ``Rejected`` instead of failing obscurely.

    Differences from the parent, each because real exports need it: color and palette images
    become luminance; MONOCHROME1 is inverted so bright means dense everywhere; multi-frame
    files stack frames on the last axis like series; slices are ordered by position, not by
    InstanceNumber; images without patient orientation (CR/DX/US) get an axial-like affine
    from their pixel spacing instead of a warning per file.
    """

    def __init__(self, modality: str | None = None, *, strict_modality: bool = True) -> None:
        super().__init__(affine_lps_to_ras=True, swap_ij=True, prune_metadata=True)
        self.modality = modality
        self.strict_modality = strict_modality
        self.decode_count = 0  # how many times pixel data was decoded (the cache tests read it)

    def verify_suffix(self, filename: Sequence[str | os.PathLike] | str | os.PathLike) -> bool:
        return True  # the caller chose this reader; inspect_dicom decides what is usable

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs: Any) -> Any:
        names = [Path(p) for p in ensure_tuple(data)]
        self.has_series = False
        if len(names) == 1 and not names[0].is_dir():
            ds = inspect_dicom(names[0], modality=self.modality, strict_modality=self.strict_modality)
            self.filenames = [str(names[0])]
            return ds
        files = _series_files(names[0]) if len(names) == 1 else names
        slices = self._read_series(files, where=str(names[0]) if len(names) == 1 else f"{len(names)} files")
        if len(slices) == 1:
            self.filenames = [slices[0][1]]
            return slices[0][0]
        self.has_series = True
        # a series is one list of slice names, as MONAI's own reader stores it (its annotation says a flat list)
        self.filenames = [[name for _, name in slices]]  # type: ignore[list-item]
        return [ds for ds, _ in slices]

    def _read_series(self, files: list[Path], where: str) -> list[tuple[Dataset, str]]:
        if not files:
            raise Rejected("unsupported", f"{where} holds no files (a series folder holds the slices directly)",
                           hint="point the manifest at the folder that contains the slice files")
        good: list[tuple[Dataset, str]] = []
        problems: list[Rejected] = []
        for f in files:
            try:
                good.append((inspect_dicom(f, modality=self.modality, strict_modality=self.strict_modality), str(f)))
            except Rejected as r:
                problems.append(r)
        # Slices that exist but cannot be read would leave a hole in the volume: refuse the series.
        fatal = [r for r in problems if r.reason in ("corrupt", "codec_missing", "non_finite")]
        if fatal:
            raise Rejected(fatal[0].reason,
                           f"{where}: {len(fatal)} of {len(files)} slices unusable; first: {fatal[0].detail}")
        if not good:
            reason = Counter(r.reason for r in problems).most_common(1)[0][0]
            raise Rejected(reason, f"{where}: none of its {len(files)} files is a usable image ({problems[0].detail})")
        series = {str(ds.get("SeriesInstanceUID", "")) for ds, _ in good}
        if len(series) > 1:
            raise Rejected("unsupported", f"{where} mixes {len(series)} series",
                           hint="give each series its own folder, or let discovery group the files")
        sizes = {(int(ds.get("Rows", 0)), int(ds.get("Columns", 0))) for ds, _ in good}
        if len(sizes) > 1:
            raise Rejected("unsupported", f"{where}: slices differ in size {sorted(sizes)}")
        if len(good) > 1 and any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for ds, _ in good):
            raise Rejected("unsupported", f"{where}: a series of multi-frame files cannot be stacked")
        return _order_slices(good, where)

    def _get_array_data(self, img: Dataset, filename: Any) -> np.ndarray:
        self.decode_count += 1
        try:
            arr = img.pixel_array
        except Exception as e:  # noqa: BLE001 - any decoder failure means these bytes are not a valid image
            where = f" in {Path(str(filename)).name}" if self.has_series else ""
            raise Rejected("corrupt", f"pixel data cannot be decoded{where} ({_short(e)})") from e
        photometric = str(img.get("PhotometricInterpretation", "")).upper()
        frames = int(img.get("NumberOfFrames", 1) or 1)
        if photometric == "PALETTE COLOR":
            from pydicom.pixels import apply_color_lut

            arr = apply_color_lut(arr, img)
        if int(img.get("SamplesPerPixel", 1) or 1) > 1 or photometric == "PALETTE COLOR":
            # pydicom already converted YBR to RGB; models here take one channel
            arr = arr[..., 0] * 0.299 + arr[..., 1] * 0.587 + arr[..., 2] * 0.114
        arr = np.asarray(arr, dtype=np.float32)
        if frames > 1 and arr.ndim == 3:
            arr = np.moveaxis(arr, 0, -1)  # frames last, the axis series slices are stacked on
        if arr.ndim not in (2, 3) or min(arr.shape) < 1:
            raise Rejected("unsupported", f"pixel array of shape {arr.shape} is not a 2D image or a volume")
        slope = float(img.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(img.get("RescaleIntercept", 0.0) or 0.0)
        with np.errstate(over="ignore", invalid="ignore"):  # overflow becomes inf, refused just below
            arr = arr * np.float32(slope) + np.float32(intercept)
        if not np.isfinite(arr).all():
            raise Rejected("non_finite", f"{int((~np.isfinite(arr)).sum())} pixel values are NaN or infinite")
        if photometric == "MONOCHROME1":
            arr = arr.max() + arr.min() - arr
        return arr

    def _get_meta_dict(self, img: Dataset) -> dict:
        # The parent serialises the whole dataset (pixel data included, as base64) and then keeps
        # five tags; serialising only those five is the same result without the cost.
        keep = Dataset()
        for tag in (0x00200037, 0x00200032, 0x00280030, 0x52009229, 0x52009230):
            if tag in img:
                keep.add(img[tag])
        return keep.to_json_dict(suppress_invalid_tags=True)

    def _get_affine(self, metadata: dict, lps_to_ras: bool = True) -> np.ndarray:
        if "00200037" in metadata and "00200032" in metadata:
            return super()._get_affine(metadata, lps_to_ras)
        # Projection images (CR/DX/US/secondary capture) carry no patient orientation by design.
        spacing = metadata.get("spacing")
        if spacing is None and "00280030" in metadata:
            spacing = metadata["00280030"].get("Value")
        affine = np.eye(4)
        if spacing is not None and len(spacing) >= 2:
            affine[0, 0], affine[1, 1] = float(spacing[1]), float(spacing[0])  # (row, col) -> (x, y)
        return orientation_ras_lps(affine) if lps_to_ras else affine

    def get_data(self, data: Any) -> tuple[np.ndarray, dict]:
        try:
            return super().get_data(data)
        except Rejected:
            raise
        except (TypeError, AttributeError, NameError):
            raise  # a bug, not a data problem: classify_exception reports it as internal_error
        except Exception as e:  # noqa: BLE001 - geometry or stacking failures of a malformed header
            raise Rejected("corrupt", f"cannot be assembled into an image ({_short(e)})") from e


def _series_files(folder: Path) -> list[Path]:
    # Only the files directly in the folder: a series folder holds its slices, nothing deeper.
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _slice_positions(slices: list[tuple[Dataset, str]]) -> list[float] | None:
    """Each slice's position along its normal; None when a slice lacks its position or orientation."""
    positions: list[float] = []
    for ds, _ in slices:
        ipp, iop = ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient")
        if ipp is None or iop is None or len(ipp) != 3 or len(iop) != 6:
            return None
        normal = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
        positions.append(float(np.dot(normal, np.asarray(ipp, float))))
    return positions


def _order_slices(slices: list[tuple[Dataset, str]], where: str) -> list[tuple[Dataset, str]]:
    """Sort by position along the slice normal; MONAI sorts by InstanceNumber, which exports often renumber."""
    if len(slices) == 1:
        return slices
    positions = _slice_positions(slices)
    if positions is None:
        ordered = sorted(slices, key=lambda s: int(s[0].get("InstanceNumber", 0) or 0))
        step = float(ordered[0][0].get("SliceThickness", 1.0) or 1.0)
        for i, (ds, _) in enumerate(ordered):  # in memory only: MONAI derives the z spacing from these
            ds.ImagePositionPatient = [0.0, 0.0, i * step]
            ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    else:
        if len(set(np.round(positions, 4))) < len(positions):
            raise Rejected("unsupported", f"{where}: several slices share a position (multi-echo or dynamic series)",
                           hint="split the series into one folder per echo or time point")
        ordered = [s for _, s in sorted(zip(positions, slices, strict=False), key=lambda t: t[0])]
    for i, (ds, _) in enumerate(ordered):
        ds.InstanceNumber = i + 1  # in memory only: MONAI stacks by InstanceNumber
    return ordered


# ---------------------------------------------------------------------------------------------
# loading through MONAI and classifying failures


class LoadDicomd(LoadImaged):
    """``LoadImaged`` bound to a ``SiteDicomReader`` and called with it at runtime.

    Passing the reader at call time makes LoadImage use only it, so its ``Rejected`` errors reach
    the caller intact instead of being flattened into "cannot find a suitable reader" text.
    """

    def __init__(self, keys: str | Sequence[str], modality: str | None = None, *, strict_modality: bool = True) -> None:
        self.site_reader = SiteDicomReader(modality, strict_modality=strict_modality)
        with quiet_monai_loader():
            # MONAI annotates `reader` as a class or a name, but documents and accepts a reader instance too
            super().__init__(keys, reader=self.site_reader, image_only=True,  # type: ignore[arg-type]
                             dtype=np.float32)

    def __call__(self, data: Any, reader: Any = None) -> Any:
        return super().__call__(data, reader or self.site_reader)


def classify_exception(exc: BaseException,
                       path: str | os.PathLike | Sequence[str | os.PathLike] | None = None) -> Rejected:
    """Map any failure while loading one record to a ``Rejected`` with a reason from ``REJECT_REASONS``."""
    chain: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and e not in chain:  # MONAI wraps transform errors in RuntimeError(...) from e
        chain.append(e)
        e = e.__cause__ or e.__context__
    for e in chain:
        if isinstance(e, Rejected):
            return e
    root = chain[-1]
    if isinstance(root, InvalidDicomError):
        return Rejected("not_dicom", _short(root))
    if isinstance(root, (EOFError, struct.error, OSError, ValueError, KeyError, IndexError, OverflowError)):
        return Rejected("corrupt", _short(root))
    if isinstance(root, NotImplementedError):
        return Rejected("unsupported", _short(root))
    where = f" while reading {path}" if path else ""
    return Rejected("internal_error", f"{type(root).__name__}{where}: {_short(root)}")


def read_dicom(path: str | os.PathLike | Sequence[str | os.PathLike], *, modality: str | None = None,
               strict_modality: bool = True) -> tuple[np.ndarray, dict]:
    """Decode a file, a series folder or a list of slice files to ``(array, meta)``; raises ``Rejected``."""
    loader = LoadDicomd("image", modality, strict_modality=strict_modality)
    src = [str(p) for p in path] if isinstance(path, (list, tuple)) else str(path)
    try:
        img = loader({"image": src})["image"]
    except Exception as e:  # noqa: BLE001 - every failure becomes a reason
        raise classify_exception(e, src) from e
    return img.numpy(), dict(img.meta)


def check_dicom(path: str | os.PathLike | Sequence[str | os.PathLike], *, modality: str | None = None,
                strict_modality: bool = True) -> Rejected | None:
    """``None`` if the file or series decodes to a finite image, else the ``Rejected`` saying why."""
    try:
        read_dicom(path, modality=modality, strict_modality=strict_modality)
    except Rejected as r:
        return r
    return None


def _short(e: BaseException, limit: int = 200) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."

