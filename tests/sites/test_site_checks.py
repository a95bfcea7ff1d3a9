"""A site's files against the experiment: the same error, naming site, key and fix, in-process and at a node.

Each case is one of the symptoms issue 9 reported, on files `medsplit synth --for` wrote: a key the site does not
hold (was an uncaught KeyError: 'image' in data_adapters/batches.py in-process, and "has shape None, but ...
declares (1, 32, 32)" over gloo), a table declared as an image (was conv3d internals), a table declared with the
wrong width, and labels of the wrong kind.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from data_adapters.batches import DatasetSource
from data_adapters.synth_study import synth_for_experiment
from medsplit.config import load_experiment
from medsplit.errors import DataError
from medsplit.runtime.node import Node
from sites.cli import main as medsplit
from sites.nodes import site_options
from sites.run import open_experiment, run_in_process

STUDY = {"experiment": "two-tables", "topology": {"preset": "vertical"},
         "tasks": {"outcome": {"kind": "multiclass", "classes": 3}},
         "sites": [{"name": "ehr_a", "modalities": {"ehr": {"shape": [15], "kind": "table"}}, "labels": ["outcome"]},
                   {"name": "ehr_b", "modalities": {"ehr": {"shape": [22], "kind": "table"}}}]}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cohort")
    (root / "design.yaml").write_text(yaml.safe_dump(STUDY))
    return synth_for_experiment(root / "design.yaml", root / "files", patients=12, seed=1).experiment


def _variant(cohort: Path, tmp_path: Path, change) -> Path:
    data = yaml.safe_load(cohort.read_text())
    change(data)
    path = cohort.parent / f"{tmp_path.name}.yaml"  # beside the cohort's experiment: its site paths resolve
    path.write_text(yaml.safe_dump(data))
    return path


def _both(path: Path, site: str, tmp_path: Path) -> str:
    """The error of `medsplit run` (in-process) and of the site's node (`medsplit site`, over gloo): the same."""
    exp = load_experiment(path)
    with pytest.raises(DataError) as local:
        open_experiment(exp)
    entry = exp.site(site)
    study = tmp_path / "identities"  # a site node starts only with a way to know the real server
    assert medsplit(["provision", str(study), "--experiment", str(path)]) == 0
    opts = site_options(str(entry.config), experiment=str(path), server="127.0.0.1:1", run_dir=tmp_path / site,
                        identity=study / site)
    with pytest.raises(DataError) as node:
        Node(opts)
    assert str(node.value) == str(local.value)
    return str(local.value)


def _set(i: int, key: str, value):
    def change(data):
        data["sites"][i]["modalities"] = {key: value}
    return change


def test_a_key_the_site_does_not_hold(cohort, tmp_path):
    path = _variant(cohort, tmp_path, _set(1, "image", {"shape": [1, 32, 32]}))
    message = _both(path, "ehr_b", tmp_path)
    assert message == (f"site 'ehr_b' has no data 'image', which experiment 'two-tables' declares for it (it holds "
                       f"ehr: 22 columns after encoding)\n  fix: set sites[1].modalities in {path} to the keys the "
                       f"site holds, or add modalities.image to the site's YAML ({cohort.parent}/ehr_b/site.yaml)")
    with pytest.raises(DataError, match="site 'ehr_b' has no data 'image'"):  # what `medsplit run` shows
        run_in_process(load_experiment(path), progress=False)


def test_a_table_declared_as_an_image(cohort, tmp_path):
    def change(data):
        data["sites"][1]["modalities"] = {"ehr": {"shape": [1, 32, 32]}}
    message = _both(_variant(cohort, tmp_path, change), "ehr_b", tmp_path)
    assert message.startswith("site 'ehr_b' data 'ehr' has 22 columns after encoding, but experiment 'two-tables' "
                              "declares an image [1, 32, 32]\n")
    assert message.endswith("to {shape: [22], kind: table}")


def test_a_table_of_another_width(cohort, tmp_path):
    path = _variant(cohort, tmp_path, _set(1, "ehr", {"shape": [15], "kind": "table"}))
    assert _both(path, "ehr_b", tmp_path) == (
        "site 'ehr_b' data 'ehr' has 22 columns after encoding, but experiment 'two-tables' declares [15]\n"
        f"  fix: set sites[1].modalities.ehr.shape in {path} to [22]")


def test_labels_of_another_kind(cohort, tmp_path):
    def change(data):
        data["tasks"] = {"outcome": {"kind": "binary"}}
    message = _both(_variant(cohort, tmp_path, change), "ehr_a", tmp_path)
    assert message.startswith("site 'ehr_a' label 'outcome' is multiclass with 3 classes, but task 'outcome' of "
                              "experiment 'two-tables' is binary\n  fix: write labels.outcome: {kind: binary} in the "
                              "site's YAML")


def test_the_written_study_passes_the_check(cohort):
    cohort_, _topology = open_experiment(load_experiment(cohort))
    assert cohort_.shapes("ehr_b") == {"ehr": (22,)} and cohort_.aligned == 10  # 80% of 12, rounded


def test_batches_of_a_key_the_site_does_not_hold_are_a_data_error_not_a_key_error():
    """The last guard, for a DatasetSource built by hand past the check: no uncaught KeyError: 'image'."""
    class Rows:
        row_ids = ["a"]

        def sample(self, index, seed=None):
            return {"ehr": torch.zeros(3), "row_id": "a"}

    with pytest.raises(DataError, match=r"the site's data has no key 'image' \(it holds: ehr\)"):
        DatasetSource(Rows(), ["image"]).batch([0])
