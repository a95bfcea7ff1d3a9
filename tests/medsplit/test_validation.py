"""Bad topologies and bad data are refused before training, with an error that names the problem."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medsplit import (
    DataError,
    Party,
    Segment,
    SiteData,
    SplitTrainer,
    Task,
    TensorTable,
    Topology,
    TopologyError,
    compile_topology,
)


def _lin(i: int = 4, o: int = 4) -> nn.Module:
    return nn.Linear(i, o)


def _base(**over) -> dict:
    spec = dict(
        name="t",
        parties=[Party("site", data={"x": (6,)}, labels=("y",)), Party("server", "server")],
        segments=[Segment("site.enc", "site", _lin(6, 4), ("data:x",)),
                  Segment("server.head", "server", _lin(4, 1), ("site.enc",))],
        tasks=[Task("task", "server.head", "y", share_labels=True)],
    )
    spec.update(over)
    return spec


def test_valid_base_compiles():
    plan = compile_topology(Topology(**_base()))
    assert set(plan.edges) == {"site.enc->server.head"}
    assert plan.edges["site.enc->server.head"].shape == (4,)


def test_cycle_is_refused():
    segs = [Segment("site.enc", "site", _lin(6, 4), ("data:x",)),
            Segment("server.a", "server", _lin(8, 4), ("site.enc", "server.b")),
            Segment("server.b", "server", _lin(4, 4), ("server.a",)),
            Segment("server.head", "server", _lin(4, 1), ("server.b",))]
    with pytest.raises(TopologyError, match=r"cycle: server\.(a|b) -> server\.(a|b) -> server\.(a|b)"):
        compile_topology(Topology(**_base(segments=segs)))


def test_unknown_party_is_refused_with_suggestion():
    segs = [Segment("site.enc", "site", _lin(6, 4), ("data:x",)),
            Segment("server.head", "sever", _lin(4, 1), ("site.enc",))]
    with pytest.raises(TopologyError, match="unknown party 'sever'.*did you mean 'server'"):
        compile_topology(Topology(**_base(segments=segs)))


def test_no_label_owner_is_refused():
    parties = [Party("site", data={"x": (6,)}), Party("server", "server")]
    with pytest.raises(TopologyError, match="no party owns label 'y'"):
        compile_topology(Topology(**_base(parties=parties)))


def test_labels_elsewhere_without_sharing_is_refused():
    with pytest.raises(TopologyError, match="(?s)does not share labels.*U-shaped"):
        compile_topology(Topology(**_base(tasks=[Task("task", "server.head", "y")])))


def test_mismatched_cut_shapes_are_refused():
    segs = [Segment("site.enc", "site", _lin(6, 4), ("data:x",)),
            Segment("server.head", "server", _lin(5, 1), ("site.enc",))]
    with pytest.raises(TopologyError,
                       match="(?s)segment .server.head.*per-sample shape \\(4,\\).*cut shapes do not match"):
        compile_topology(Topology(**_base(segments=segs)))


def test_merge_shape_mismatch_is_refused():
    parties = [Party("a", data={"x": (6,)}, labels=("y",)), Party("b", data={"x": (6,)}), Party("server", "server")]
    segs = [Segment("a.enc", "a", _lin(6, 4), ("data:x",)), Segment("b.enc", "b", _lin(6, 3), ("data:x",)),
            Segment("server.head", "server", _lin(4, 1), ("a.enc", "b.enc"), merge="sum")]
    with pytest.raises(TopologyError, match="merges inputs by sum, which needs equal shapes"):
        compile_topology(Topology(**_base(parties=parties, segments=segs)))


def test_site_without_data_is_refused():
    parties = [Party("site", data={"x": (6,)}, labels=("y",)), Party("empty", "site"), Party("server", "server")]
    with pytest.raises(TopologyError, match="site 'empty' holds no data"):
        compile_topology(Topology(**_base(parties=parties)))


def test_site_with_zero_rows_is_refused_before_training():
    topo = Topology(**_base())
    empty = TensorTable({"x": torch.zeros(0, 6), "y": torch.zeros(0)})
    full = TensorTable({"x": torch.zeros(4, 6), "y": torch.zeros(4)})
    with pytest.raises(DataError, match="site 'site' has no train rows"):
        SplitTrainer(topo, {"site": SiteData(empty, full)})
    with pytest.raises(DataError, match="site 'site' has no data"):
        SplitTrainer(topo, {})
    wrong = TensorTable({"x": torch.zeros(4, 5), "y": torch.zeros(4)})
    with pytest.raises(DataError, match=r"(?s)site 'site' data 'x' has 5 features, but the topology declares \[6\]"
                                         r".*fix: declare Party\('site'\).data\['x'\] = \(5,\)"):
        SplitTrainer(topo, {"site": SiteData(wrong, wrong)})


def test_unaligned_vertical_sites_are_refused():
    parties = [Party("a", data={"x": (6,)}, labels=("y",)), Party("b", data={"w": (6,)}), Party("server", "server")]
    segs = [Segment("a.enc", "a", _lin(6, 4), ("data:x",)), Segment("b.enc", "b", _lin(6, 4), ("data:w",)),
            Segment("server.head", "server", _lin(8, 1), ("a.enc", "b.enc"))]
    topo = Topology(**_base(parties=parties, segments=segs))
    a = TensorTable({"x": torch.zeros(10, 6), "y": torch.zeros(10)})
    b = TensorTable({"w": torch.zeros(9, 6)})
    with pytest.raises(DataError, match="(?s)same patients in the same order.*private set intersection"):
        SplitTrainer(topo, {"a": SiteData(a, a), "b": SiteData(b, b)})


def test_raw_shaped_cut_is_refused():
    segs = [Segment("site.enc", "site", nn.Identity(), ("data:x",)),
            Segment("server.head", "server", _lin(6, 1), ("site.enc",))]
    with pytest.raises(TopologyError, match="shape of 'site''s raw data"):
        compile_topology(Topology(**_base(segments=segs)))


def test_reading_another_partys_data_is_refused():
    segs = [Segment("site.enc", "site", _lin(6, 4), ("data:x",)),
            Segment("server.head", "server", _lin(10, 1), ("site.enc", "data:x"))]
    with pytest.raises(TopologyError, match="(?s)reads data .x., which .server. does not hold.*raw data never travels"):
        compile_topology(Topology(**_base(segments=segs)))


def test_unknown_input_idle_segment_and_bad_head():
    segs = [Segment("site.enc", "site", _lin(6, 4), ("data:x",)),
            Segment("server.head", "server", _lin(4, 1), ("site.encoder",))]
    with pytest.raises(TopologyError, match="unknown segment 'site.encoder'.*did you mean 'site.enc'"):
        compile_topology(Topology(**_base(segments=segs)))
    segs = _base()["segments"] + [Segment("server.extra", "server", _lin(4, 2), ("site.enc",))]
    with pytest.raises(TopologyError, match=r"\['server.extra'\] feed no task"):
        compile_topology(Topology(**_base(segments=segs)))
    segs = [Segment("site.enc", "site", _lin(6, 4), ("data:x",)),
            Segment("server.head", "server", _lin(4, 2), ("site.enc",))]
    with pytest.raises(TopologyError, match=r"bce\) needs head 'server.head' to output shape \(1,\)"):
        compile_topology(Topology(**_base(segments=segs)))


def test_route_merge_needs_one_site_per_step():
    parties = [Party("a", data={"x": (6,)}, labels=("y",)), Party("b", data={"x": (6,)}, labels=("y",)),
               Party("server", "server")]
    segs = [Segment("a.enc", "a", _lin(6, 4), ("data:x",)), Segment("b.enc", "b", _lin(6, 4), ("data:x",)),
            Segment("server.head", "server", _lin(4, 1), ("a.enc", "b.enc"), merge="route")]
    with pytest.raises(TopologyError, match="owned by several parties.*joint"):
        compile_topology(Topology(**_base(parties=parties, segments=segs)))
    plan = compile_topology(Topology(**_base(parties=parties, segments=segs, schedule="turns")))
    with pytest.raises(TopologyError, match="routes one input per step"):
        plan.step_ops(["a", "b"])
    assert [op.party for op in plan.step_ops(["b"]) if op.action == "forward"] == ["b", "server"]
