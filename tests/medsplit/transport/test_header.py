"""The wire header: every field round-trips, and every bad field is refused naming the peer and the field."""

from __future__ import annotations

import pytest
import torch

from medsplit import (
    PRESETS,
    MockTransport,
    PresetConfig,
    ProtocolError,
    SplitTrainer,
    build_preset,
    preset_data,
)
from medsplit.plan import compile_topology
from medsplit.transport.header import (
    BYE,
    DTYPES,
    HEADER_LEN,
    MAX_NDIM,
    MAX_REASON_BYTES,
    PHASES,
    Header,
    NameTable,
    bye_header,
    decode,
    encode,
    encode_message,
)
from medsplit.wire.message import Kind, Message

NAMES = NameTable(["site-b", "server", "site-a", "server"], ["b->s", "a->s", "labels"])


def _header(**kw) -> Header:
    base = {"step": 7, "edge": "a->s", "kind": Kind.ACTIVATION, "src": "site-a", "dst": "server", "phase": "train",
                "dtype": torch.float32, "shape": (4, 16, 8, 8)}
    base.update(kw)
    return Header(**base)


def test_name_table_is_sorted_deduplicated_and_fingerprinted():
    assert NAMES.parties == ("server", "site-a", "site-b")
    assert NAMES.edges == ("a->s", "b->s", "labels")
    same = NameTable(["site-a", "site-b", "server"], ["labels", "b->s", "a->s"])
    assert same == NAMES and same.fingerprint == NAMES.fingerprint
    assert NameTable(["server", "site-a"], ["a->s"]).fingerprint != NAMES.fingerprint
    with pytest.raises(ProtocolError, match="party 'nobody' is not in this run's name table"):
        NAMES.party_id("nobody")


def test_name_table_from_plan_holds_every_party_and_flow():
    cfg = PresetConfig(image_shape=(1, 16, 16))
    plan = compile_topology(build_preset("vanilla", cfg))
    names = NameTable.from_plan(plan)
    assert set(names.parties) == {"hospital", "server"}
    assert {e for e, *_ in plan.allowed()} == set(names.edges)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(), (0,), (3,), (2, 0, 5), tuple(range(1, MAX_NDIM + 1))])
def test_round_trip_every_dtype_and_shape(dtype, shape):
    h = _header(dtype=dtype, shape=shape)
    t = encode(h, NAMES)
    assert t.dtype == torch.int64 and tuple(t.shape) == (HEADER_LEN,)
    assert decode(t, NAMES, peer="site-a", expect_src="site-a", expect_dst="server") == h


@pytest.mark.parametrize("kind", list(Kind))
@pytest.mark.parametrize("phase", PHASES)
def test_round_trip_every_kind_and_phase(kind, phase):
    h = _header(kind=kind, phase=phase, step=2**40, edge="labels", src="server", dst="site-b")
    assert decode(encode(h, NAMES), NAMES, peer="server") == h


def test_message_round_trip_and_goodbye():
    msg = Message(3, "b->s", Kind.GRADIENT, "server", "site-b", torch.ones(2, 3, dtype=torch.bfloat16), "eval")
    h = decode(encode_message(msg, NAMES), NAMES, peer="server")
    assert (h.step, h.edge, h.kind, h.src, h.dst, h.phase, h.dtype, h.shape, h.nbytes) == (
        3, "b->s", Kind.GRADIENT, "server", "site-b", "eval", torch.bfloat16, (2, 3), 12)
    assert h.message(msg.tensor) == msg
    bye = decode(encode(bye_header("site-a", "server", 5), NAMES), NAMES, peer="site-a")
    assert bye.op == BYE and bye.shape == (5,) and bye.dtype == torch.uint8


def _bad(index: int, value: int, *, names: NameTable = NAMES, **kw) -> ProtocolError:
    t = encode(_header(), names)
    t[index] = value
    with pytest.raises(ProtocolError) as err:
        decode(t, names, peer="site-a", **kw)
    assert "peer 'site-a'" in str(err.value)
    return err.value


@pytest.mark.parametrize("index,value,field", [
    (0, 0x12345678, "magic"),
    (1, 99, "version"),
    (2, 7, "op"),
    (3, 12345, "name table"),
    (4, len(Kind), "kind"),
    (4, -1, "kind"),
    (5, len(PHASES), "phase"),
    (6, -1, "step"),
    (7, 3, "edge"),
    (7, -2, "edge"),
    (8, 3, "src"),
    (9, -1, "dst"),
    (10, len(DTYPES), "dtype"),
    (10, -1, "dtype"),
    (11, MAX_NDIM + 1, "ndim"),
    (11, -1, "ndim"),
    (12, -4, "shape"),
    (16, 2, "shape"),  # a dimension beyond ndim (4) must be zero
])
def test_every_bad_field_is_named(index, value, field):
    assert f"bad {field}:" in str(_bad(index, value))


def test_bad_layout_is_refused():
    for t in (torch.zeros(HEADER_LEN, dtype=torch.int32), torch.zeros(HEADER_LEN + 1, dtype=torch.int64),
              torch.zeros(2, HEADER_LEN, dtype=torch.int64)):
        with pytest.raises(ProtocolError, match="peer 'x' sent a header with a bad layout"):
            decode(t, NAMES, peer="x")


def test_payload_over_the_byte_limit_is_refused_before_allocation():
    big = encode(_header(dtype=torch.float64, shape=(2**20, 2**20)), NAMES)  # 8 TiB
    with pytest.raises(ProtocolError, match=r"bad shape: .*over the 1073741824-byte limit"):
        decode(big, NAMES, peer="site-a")
    small = encode(_header(shape=(10, 10)), NAMES)
    assert decode(small, NAMES, peer="site-a", max_bytes=400).nbytes == 400
    with pytest.raises(ProtocolError, match="over the 399-byte limit"):
        decode(small, NAMES, peer="site-a", max_bytes=399)


def test_a_peer_cannot_speak_for_another_or_to_another():
    t = encode(_header(), NAMES)
    with pytest.raises(ProtocolError, match="peer 'site-b' sent a header with a bad src: 'site-a' on the connection"):
        decode(t, NAMES, peer="site-b", expect_src="site-b")
    with pytest.raises(ProtocolError, match="bad dst: 'server' on a connection to 'site-b'"):
        decode(t, NAMES, peer="site-a", expect_src="site-a", expect_dst="site-b")


def test_goodbye_must_be_short_text():
    t = encode(bye_header("site-a", "server", MAX_REASON_BYTES + 1), NAMES)
    with pytest.raises(ProtocolError, match="bad goodbye"):
        decode(t, NAMES, peer="site-a")
    t = encode(bye_header("site-a", "server", 4), NAMES)
    t[10] = DTYPES.index(torch.float32)
    with pytest.raises(ProtocolError, match="bad goodbye"):
        decode(t, NAMES, peer="site-a")


def test_encode_refuses_what_the_wire_cannot_carry():
    with pytest.raises(ProtocolError, match="dtype torch.complex64 is not one the wire carries"):
        encode(_header(dtype=torch.complex64), NAMES)
    with pytest.raises(ProtocolError, match="9 dimensions"):
        encode(_header(shape=(1,) * 9), NAMES)
    with pytest.raises(ProtocolError, match="edge 'nope' is not in this run's name table"):
        encode(_header(edge="nope"), NAMES)
    with pytest.raises(ProtocolError, match="unknown phase"):
        encode(_header(phase="warmup"), NAMES)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_message_of_every_preset_crosses_the_header_codec(preset):
    """What the engine sends (names, kinds, phases, dtypes, shapes) fits the header of the name table of its plan."""
    cfg = PresetConfig(image_shape=(1, 16, 16), ushaped=preset == "vertical")
    topo = build_preset(preset, cfg)
    seen: list[Message] = []

    def through_header(msg: Message) -> Message:
        h = decode(encode_message(msg, names), names, peer=msg.src, expect_src=msg.src, expect_dst=msg.dst)
        seen.append(msg)
        return h.message(msg.tensor)

    names = NameTable.from_plan(compile_topology(topo))
    trainer = SplitTrainer(topo, preset_data(topo, cfg, seed=0, patients=48), batch_size=16,
                           transport=MockTransport(through_header))
    trainer.fit(1)
    assert {m.phase for m in seen} >= {"train", "eval"} and len(seen) > 0
