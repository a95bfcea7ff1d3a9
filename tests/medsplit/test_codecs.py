"""Wire codecs: each round-trips within its stated error, in the bytes it states, and refuses what it did not make."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from medsplit import (
    ConfigError,
    Kind,
    Message,
    MockTransport,
    PresetConfig,
    PrivacyError,
    ProtocolError,
    SplitTrainer,
    TopologyError,
    build_preset,
    preset_data,
)
from medsplit.plan import compile_topology
from medsplit.transport import LocalTransport
from medsplit.transport.header import HEADER_LEN, MAX_NDIM, Header, NameTable, decode, encode, encode_message
from medsplit.wire import Expect, Meter, Packed, Wire
from medsplit.wire.codecs import CODECS, codec_chain, edge_codecs

CHAINS = ["fp16", "bf16", "int8", "topk:0.5", "topk:0.1", "topk:0.01", "topk:0.1+int8", "topk:0.25+fp16",
          "topk:0.02+bf16", "topk:1+int8"]


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 8, 9, 7, generator=g)
    return {
        "feature map": x,
        "after relu": torch.relu(x) * 3,
        "wide range": torch.randn(5, 40, generator=g) * torch.logspace(-6, 4, 40),
        "constant channel": torch.cat([torch.full((4, 1, 5), 2.5), torch.randn(4, 3, 5, generator=g)], dim=1),
        "gradient-sized": torch.randn(3, 16, generator=g) * 1e-4,
    }


@pytest.mark.parametrize("name", CHAINS)
@pytest.mark.parametrize("what", list(_tensors()))
def test_every_codec_round_trips_within_its_stated_error(name, what):
    x = _tensors()[what]
    chain = codec_chain(name.split("+"))
    payload = chain.encode(x)
    assert payload.dtype == torch.uint8 and payload.dim() == 1
    assert payload.numel() == chain.nbytes(tuple(x.shape))  # the length is a function of the shape alone
    y = chain.decode(payload, tuple(x.shape))
    assert y.shape == x.shape and y.dtype == torch.float32
    err = (y.double() - x.double()).abs()
    bound = chain.bound(x).double()
    assert bool((err <= bound).all()), f"{name} on {what}: worst excess {(err - bound).max().item():.3g}"
    if chain.sparsifier is not None:
        rows, n, k = chain.sparsifier.k(tuple(x.shape))
        kept = y.reshape(rows, n) != 0
        assert int(kept.sum(1).max()) <= k
        # what was dropped is never larger than what was kept, sample by sample
        mags = x.reshape(rows, n).abs()
        dropped_max = torch.where(kept, torch.zeros_like(mags), mags).amax(1)
        kept_min = torch.where(kept, mags, torch.full_like(mags, float("inf"))).amin(1)
        assert bool((dropped_max <= kept_min).all())


def test_bounds_are_not_vacuous():
    """The stated errors are tight enough to mean something: int8 within half a step, halves within an ulp."""
    x = torch.randn(4, 8, 16, 16)
    span = (x.amax((0, 2, 3)) - x.amin((0, 2, 3))).max()
    assert codec_chain("int8").bound(x).max() < span / 500
    assert (codec_chain("fp16").bound(x) / x.abs().clamp_min(1e-3)).max() < 1e-3
    assert codec_chain("topk:0.1").bound(x).count_nonzero() == x.numel() - 4 * 205  # 10% of 2048 kept, rounded up


def test_bytes_on_the_wire_at_the_benchmark_cut():
    shape = (8, 32, 64, 64)  # the runtime benchmark's cut: 4.19 MB of float32
    raw = 4 * torch.Size(shape).numel()
    assert raw / codec_chain("int8").nbytes(shape) > 3.99
    assert raw / codec_chain(["fp16"]).nbytes(shape) == 2
    assert raw / codec_chain(["topk:0.1", "int8"]).nbytes(shape) > 16


def test_fp16_refuses_what_it_cannot_carry():
    with pytest.raises(ProtocolError, match=r"beyond fp16's range.*\n  fix: use bf16"):
        codec_chain("fp16").encode(torch.tensor([[1.0, 7e4]]))
    assert codec_chain("bf16").decode(codec_chain("bf16").encode(torch.tensor([[1.0, 7e4]])), (1, 2))[0, 1] > 6.9e4


def test_chains_are_named_and_checked():
    assert codec_chain(["topk:0.10", "int8"]).name == "topk:0.1+int8"
    with pytest.raises(ConfigError, match=r"unknown codec 'int4'.*did you mean 'int8'"):
        codec_chain(["int4"])
    with pytest.raises(ConfigError, match="topk must come first"):
        codec_chain(["int8", "topk:0.1"])
    with pytest.raises(ConfigError, match="two quantizers"):
        codec_chain(["fp16", "int8"])
    with pytest.raises(ConfigError, match="needs the fraction"):
        codec_chain(["topk"])
    with pytest.raises(ConfigError, match=r"must be in \(0, 1\]"):
        codec_chain(["topk:1.5"])
    with pytest.raises(ConfigError, match="takes no argument"):
        codec_chain(["int8:4"])
    assert set(CODECS) == {"fp16", "bf16", "int8", "topk"}


def _corrupt(payload: torch.Tensor, at: int, value: int) -> torch.Tensor:
    bad = payload.clone()
    bad[at] = value
    return bad


def test_a_malformed_payload_is_refused():
    x = torch.randn(4, 3, 8)
    shape = tuple(x.shape)
    int8 = codec_chain("int8")
    p = int8.encode(x)
    with pytest.raises(ProtocolError, match="exactly 120 uint8 bytes are expected"):
        int8.decode(p[:-1], shape)
    with pytest.raises(ProtocolError, match="exactly 120 uint8 bytes"):
        int8.decode(torch.cat([p, torch.zeros(1, dtype=torch.uint8)]), shape)  # nothing may ride along
    nan_scale = p.clone()
    nan_scale[12:16] = torch.tensor([float("nan")]).view(torch.uint8)  # channel 0's scale
    with pytest.raises(ProtocolError, match="int8 payload is malformed: a zero point or scale"):
        int8.decode(nan_scale, shape)
    negative = p.clone()
    negative[12:16] = torch.tensor([-1.0]).view(torch.uint8)
    with pytest.raises(ProtocolError, match="negative, NaN or infinite"):
        int8.decode(negative, shape)
    mask = codec_chain("topk:0.5")  # bitmask positions
    p = mask.encode(x)
    with pytest.raises(ProtocolError, match="does not mark exactly 12 of its 24 values"):
        mask.decode(_corrupt(p, 0, int(p[0]) ^ 1), shape)
    with pytest.raises(ProtocolError, match="padding is not zero"):
        mask.decode(_corrupt(p, 13, 1), shape)  # 4 samples x 3 mask bytes, padded to 16
    idx = codec_chain("topk:0.01")  # int32 indices (one per sample)
    y = torch.randn(2, 1000)
    p = idx.encode(y)
    out_of_range = p.clone()
    out_of_range[0:4] = torch.tensor([1000], dtype=torch.int32).view(torch.uint8)
    with pytest.raises(ProtocolError, match=r"indices must rise strictly within 0\.\.999"):
        idx.decode(out_of_range, (2, 1000))


# --- the Wire: codecs go where the plan says, and nowhere else ------------------------------------------

EDGE = ("a->b", Kind.ACTIVATION, "site", "server")
GRAD = ("a->b", Kind.GRADIENT, "server", "site")


def _wire(transport, codecs=None) -> tuple[Wire, Meter]:
    meter = Meter()
    chains = edge_codecs(codecs if codecs is not None else {"a->b": ["int8"]}, ["a->b"])
    return Wire(transport, meter, {EDGE, GRAD}, codecs=chains), meter


def test_the_wire_encodes_declared_cuts_and_meters_the_bytes_that_cross():
    transport = LocalTransport()
    wire, meter = _wire(transport)
    x = torch.randn(8, 32, 16, 16)
    wire.send(Message(0, "a->b", Kind.ACTIVATION, "site", "server", x))
    got = wire.recv(Expect(0, "a->b", Kind.ACTIVATION, "site", "server", (32, 16, 16), torch.float32))
    assert got.shape == x.shape and bool(((got - x).abs() <= codec_chain("int8").bound(x)).all())
    (row,) = meter.audit()
    assert row["bytes"] == 8 * 32 * 16 * 16 + 8 * 32 and row["codecs"] == ["int8"]
    assert row["dtypes"] == ["float32"] and row["shapes"] == [[32, 16, 16]]  # the tensor it stands for
    assert meter.bytes_by_party() == {"server": {"sent": 0, "received": row["bytes"]},
                                      "site": {"sent": row["bytes"], "received": 0}}


def test_a_codec_cannot_smuggle_what_the_plan_does_not_declare():
    transport = LocalTransport()
    wire, _ = _wire(transport)
    raw = torch.randn(4, 1, 8, 8)
    with pytest.raises(PrivacyError, match="does not declare"):  # checked before anything is encoded
        wire.send(Message(0, "raw-image", Kind.ACTIVATION, "site", "server", raw))
    payload = codec_chain("int8").encode(raw)
    with pytest.raises(PrivacyError, match="already encoded"):  # bytes cannot be passed off as a codec's
        wire.send(Message(0, "a->b", Kind.ACTIVATION, "site", "server", payload,
                          packed=Packed("int8", (4, 1, 8, 8), torch.float32)))
    assert transport.pending() == 0


def _deliver(msg: Message, codecs=None) -> torch.Tensor:
    """``msg`` as if a peer had sent it; received by a wire whose plan declares ``codecs``."""
    transport = MockTransport(lambda m: m)
    wire, _ = _wire(transport, codecs)
    transport.send(msg)
    return wire.recv(Expect(0, "a->b", Kind.ACTIVATION, "site", "server", (3, 4), torch.float32))


def test_a_receiver_decodes_only_with_the_codec_its_edge_declares():
    x = torch.randn(2, 3, 4)
    fp16 = Message(0, "a->b", Kind.ACTIVATION, "site", "server", codec_chain("fp16").encode(x),
                   packed=Packed("fp16", (2, 3, 4), torch.float32))
    with pytest.raises(ProtocolError, match="with codec int8, but received .*encoded with fp16"):
        _deliver(fp16)
    with pytest.raises(ProtocolError, match="with no codec, but received"):
        _deliver(fp16, codecs={})
    with pytest.raises(ProtocolError, match="with codec int8, but received .* 3, 4\\) and dtype torch.float32\\n"):
        _deliver(Message(0, "a->b", Kind.ACTIVATION, "site", "server", x))  # a plain tensor where int8 is due
    lying = dataclasses.replace(fp16, tensor=codec_chain("int8").encode(torch.randn(2, 3, 5)),
                                packed=Packed("int8", (2, 3, 4), torch.float32))
    with pytest.raises(ProtocolError, match="int8 payload is malformed"):
        _deliver(lying)
    assert torch.allclose(_deliver(dataclasses.replace(fp16, tensor=codec_chain("int8").encode(x),
                                                       packed=Packed("int8", (2, 3, 4), torch.float32))), x, atol=0.05)


def test_a_nan_hidden_in_a_payload_is_refused():
    x = torch.randn(2, 3, 4)
    payload = codec_chain("fp16").encode(x)
    payload[0:2] = torch.tensor([float("nan")], dtype=torch.float16).view(torch.uint8)
    msg = Message(0, "a->b", Kind.ACTIVATION, "site", "server", payload,
                  packed=Packed("fp16", (2, 3, 4), torch.float32))
    with pytest.raises(ProtocolError, match="holds NaN or Inf"):
        _deliver(msg, codecs={"*": ["fp16"]})


# --- the header carries codecs, and the name table binds both ends to the same ones ----------------------

def test_the_header_carries_an_encoded_message():
    names = NameTable(["site", "server"], ["a->b"], ["int8", "topk:0.1+int8"])
    x = torch.randn(8, 16)
    msg = Message(5, "a->b", Kind.GRADIENT, "server", "site", codec_chain("topk:0.1+int8".split("+")).encode(x),
                  micro=3, packed=Packed("topk:0.1+int8", (8, 16), torch.float32))
    h = decode(encode_message(msg, names), names, peer="server", expect_src="server", expect_dst="site")
    assert (h.codec, h.payload, h.micro, h.shape, h.dtype, h.nbytes) == (
        "topk:0.1+int8", msg.tensor.numel(), 3, (8, 16), torch.float32, msg.tensor.numel())
    assert h.message(msg.tensor) == msg
    assert NameTable(["site", "server"], ["a->b"], ["int8"]).fingerprint != names.fingerprint
    with pytest.raises(ProtocolError, match="codec 'fp16' is not in this run's name table"):
        encode_message(dataclasses.replace(msg, packed=Packed("fp16", (8, 16), torch.float32)), names)


@pytest.mark.parametrize("index,value,field", [
    (12 + MAX_NDIM, -1, "micro-batch"),
    (12 + MAX_NDIM + 1, 3, "codec"),
    (12 + MAX_NDIM + 1, -1, "codec"),
    (12 + MAX_NDIM + 2, -5, "payload"),
    (12 + MAX_NDIM + 2, 0, "payload"),  # a codec without a byte count
])
def test_bad_codec_fields_are_named(index, value, field):
    names = NameTable(["site", "server"], ["a->b"], ["int8", "fp16"])
    t = encode(Header(1, "a->b", Kind.ACTIVATION, "site", "server", "train", torch.float32, (2, 3), codec="int8",
                      payload=14), names)
    assert t.numel() == HEADER_LEN
    t[index] = value
    with pytest.raises(ProtocolError, match=f"bad {field}:"):
        decode(t, names, peer="site")


# --- codecs per edge in a topology ---------------------------------------------------------------------

def _vanilla(codecs, patients=64):
    torch.manual_seed(0)
    cfg = PresetConfig(image_shape=(1, 16, 16))
    topo = build_preset("vanilla", cfg)
    topo.codecs = codecs
    return topo, preset_data(topo, cfg, seed=0, patients=patients)


def test_codecs_are_declared_per_edge_and_checked_against_the_topology():
    topo, _ = _vanilla({"hospital.encoder->server.hed": ["int8"]})
    with pytest.raises(TopologyError, match="not a cut edge.*did you mean 'hospital.encoder->server.head'"):
        compile_topology(topo)
    topo.codecs = {"*": ["fp16"], "hospital.encoder->server.head": {"gradient": ["int8"]}}
    plan = compile_topology(topo)
    edge = "hospital.encoder->server.head"
    assert plan.codecs[(edge, Kind.ACTIVATION)].name == "fp16" and plan.codecs[(edge, Kind.GRADIENT)].name == "int8"
    assert plan.codec_names() == ["fp16", "int8"]
    assert set(NameTable.from_plan(plan).codecs) == {"fp16", "int8"}
    topo.codecs = {"*": {"label": ["int8"]}}
    with pytest.raises(ConfigError, match="give a chain for 'activation' and/or 'gradient'"):
        compile_topology(topo)


@pytest.mark.slow
def test_training_with_codecs_sends_fewer_bytes_and_still_learns():
    topo, data = _vanilla({}, patients=300)
    plain = SplitTrainer(topo, data, batch_size=16)
    plain.fit(3)
    topo, data = _vanilla({"*": ["int8"]}, patients=300)
    coded = SplitTrainer(topo, data, batch_size=16)
    coded.fit(3)
    by_kind = {(r["kind"]): r for r in coded.meter.audit() if r["src"] in ("hospital", "server")}
    plain_kind = {(r["kind"]): r for r in plain.meter.audit()}
    for kind in ("activation", "gradient"):
        assert plain_kind[kind]["bytes"] / by_kind[kind]["bytes"] > 3.5, kind
        assert by_kind[kind]["codecs"] == ["int8"]
    assert by_kind["label"]["bytes"] == plain_kind["label"]["bytes"] and "codecs" not in by_kind["label"]
    auc = coded.history[-1].metrics["diagnosis"]["val_auc"]
    assert abs(auc - plain.history[-1].metrics["diagnosis"]["val_auc"]) < 0.05 and auc > 0.8


def test_every_codec_message_of_a_run_crosses_the_header():
    topo, data = _vanilla({"*": ["topk:0.2", "int8"]})
    names = NameTable.from_plan(compile_topology(topo))
    seen = []

    def through_header(msg: Message) -> Message:
        h = decode(encode_message(msg, names), names, peer=msg.src, expect_src=msg.src, expect_dst=msg.dst)
        seen.append(h.codec)
        return h.message(msg.tensor.clone())

    SplitTrainer(topo, data, batch_size=16, transport=MockTransport(through_header)).fit(1)
    assert "topk:0.2+int8" in seen and "" in seen  # cut tensors encoded; labels plain
