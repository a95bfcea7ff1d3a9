"""The one check of a site's data against its party: keys, shapes, labels and label kinds, with the fix."""

from __future__ import annotations

import pytest
import torch

from medsplit import DataError, SiteData, SplitTrainer, TensorTable
from medsplit.data import Declared, LabelHeld, SiteHolding
from medsplit.engine.checks import check_site_data
from medsplit.plan import compile_topology
from medsplit.topology.parts import PresetConfig
from medsplit.topology.presets import build_preset
from medsplit.topology.study import SiteSpec, StudySpec, TaskSpec


def _plan(kind: str = "binary", classes: int = 2):
    study = StudySpec((SiteSpec("a", {"ehr": (4,)}, ("y",)), SiteSpec("b", {"image": (1, 8, 8)})),
                      (TaskSpec("y", "y", kind, classes),))  # type: ignore[arg-type]
    return compile_topology(build_preset("vertical", PresetConfig(), study))


DECLARED = Declared("experiment 'x'", "/study/x.yaml", {"a": ("site_a", 0), "b": ("site_b", 1)})


@pytest.mark.parametrize("held,message,fix", [
    (SiteHolding({"ehr": (6,)}, kinds={"ehr": "table"}),
     "site 'site_a' data 'ehr' has 6 columns after encoding, but experiment 'x' declares [4]",
     "set sites[0].modalities.ehr.shape in /study/x.yaml to [6]"),
    (SiteHolding({"labs": (4,)}, kinds={"labs": "table"}, source="/h/a.yaml"),
     "site 'site_a' has no data 'ehr', which experiment 'x' declares for it (it holds labs: 4 columns after encoding)",
     "set sites[0].modalities in /study/x.yaml to the keys the site holds, or add modalities.ehr to the site's YAML "
     "(/h/a.yaml)"),
    (SiteHolding({"ehr": (1, 16, 16)}, kinds={"ehr": "dicom CT"}),
     "site 'site_a' data 'ehr' has an image of shape [1, 16, 16] (dicom CT), but experiment 'x' declares a table [4]",
     "set sites[0].modalities.ehr in /study/x.yaml to {shape: [1, 16, 16], kind: dicom}"),
    (SiteHolding({"ehr": (4,)}),
     "site 'site_a' has no label 'y', which experiment 'x' lists for it (its labels: none)",
     "declare it under labels: in the site's data, or remove it from sites[0].labels in /study/x.yaml"),
    (SiteHolding({"ehr": (4,)}, {"y": LabelHeld("multiclass", 3)}, source="/h/a.yaml"),
     "site 'site_a' label 'y' is multiclass with 3 classes, but task 'y' of experiment 'x' is binary",
     "write labels.y: {kind: binary} in the site's YAML (/h/a.yaml), or set tasks.y: {kind: multiclass, classes: 3} "
     "in the experiment (/study/x.yaml)"),
])
def test_each_mismatch_names_the_site_the_key_what_was_expected_and_the_fix(held, message, fix):
    with pytest.raises(DataError) as exc:
        check_site_data(_plan(), "a", held, declared=DECLARED)
    assert exc.value.message == message and exc.value.hint == fix


def test_a_table_where_an_image_is_declared_says_so_before_any_convolution():
    with pytest.raises(DataError) as exc:
        check_site_data(_plan(), "b", SiteHolding({"image": (15,)}, kinds={"image": "table"}), declared=DECLARED)
    assert exc.value.message == ("site 'site_b' data 'image' has 15 columns after encoding, but experiment 'x' "
                                 "declares an image [1, 8, 8]")
    assert exc.value.hint == "set sites[1].modalities.image in /study/x.yaml to {shape: [15], kind: table}"


def test_multiclass_classes_must_agree():
    with pytest.raises(DataError, match="is multiclass with 4 classes, but task 'y' of experiment 'x' is multiclass "
                                        "with 3 classes"):
        check_site_data(_plan("multiclass", 3), "a", SiteHolding({"ehr": (4,)}, {"y": LabelHeld("multiclass", 4)}),
                        declared=DECLARED)
    check_site_data(_plan("multiclass", 3), "a", SiteHolding({"ehr": (4,)}, {"y": LabelHeld("multiclass", 3)}))


def test_labels_are_not_required_for_predictions():
    check_site_data(_plan(), "a", SiteHolding({"ehr": (4,)}), require_labels=False)


@pytest.mark.parametrize("kind,dtype,ok", [("binary", torch.float32, True), ("binary", torch.int64, False),
                                           ("multiclass", torch.int64, True), ("multiclass", torch.float32, False),
                                           ("regression", torch.float32, True)])
def test_in_memory_labels_are_checked_by_their_dtype(kind, dtype, ok):
    """SplitTrainer on tensors: a float label for a multiclass task (or the reverse) is refused up front."""
    plan = _plan(kind, 3 if kind == "multiclass" else 2)
    n = 8
    tables = {"a": {"ehr": torch.randn(n, 4), "y": torch.zeros(n, dtype=dtype)},
              "b": {"image": torch.randn(n, 1, 8, 8)}}
    data = {p: SiteData(TensorTable(t), TensorTable(t)) for p, t in tables.items()}
    if ok:
        SplitTrainer(plan.topology, data)
        return
    need = "int64 class indices" if kind == "multiclass" else "float32 values"
    with pytest.raises(DataError,
                       match=f"site 'a' label 'y' holds {dtype} values, but task 'y' is {kind}.* needs {need}"):
        SplitTrainer(plan.topology, data)
