"""The fixed-size int64 header that precedes every tensor on a multi-process wire, and its strict decoder.

Nothing but integers crosses: names (edges, parties) become ids through a ``NameTable`` that both ends
derive from the same plan, and the table's fingerprint rides in every header so that two parties running
different plans fail on the first message instead of mislabelling tensors. ``decode`` trusts nothing: a
peer controls every field, and the payload buffer is allocated from ``shape`` and ``dtype``, so both are
checked against a whitelist and a byte limit before any memory is reserved.

Layout (``HEADER_LEN`` int64 values; append only, and a changed layout bumps ``VERSION``)::

    0 magic    1 version   2 op (data | bye | control)   3 name-table fingerprint
    4 kind     5 phase     6 step              7 edge id
    8 src id   9 dst id   10 dtype id         11 ndim
    12..19 shape (unused dims are 0)
    20 micro-batch        21 codec id (0: none; i: the name table's codec i - 1)
    22 payload bytes (an encoded message's; 0 otherwise)

Version 2 added the CONTROL op, version 3 fields 20 to 22. ``dtype`` and ``shape`` are always the tensor the
message stands for; an
encoded message's payload is ``payload bytes`` of uint8 that the Wire decodes with the named codec chain,
which the plan declares for the edge (``medsplit/wire/codecs.py``).

``op == BYE`` announces that the sender closes this connection; its payload is the reason as UTF-8 bytes
(a uint8 vector of at most ``MAX_REASON_BYTES``), decoded as text, never evaluated. ``op == CONTROL`` carries
one control-plane value (UTF-8 JSON, at most ``MAX_CONTROL_BYTES``; ``inbox.py`` parses it).

Between processes the header is never sent as it is: the gloo transport seals it (``secure/channel.py``),
and binds the payload that follows to it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..errors import ProtocolError
from ..wire.message import PHASES, Kind, Message, Packed

if TYPE_CHECKING:
    from ..plan.plan import Plan

__all__ = ["NameTable", "Header", "encode", "decode", "encode_message", "bye_header", "control_header",
           "HEADER_LEN", "MAX_NDIM", "DTYPES", "PHASES", "DATA", "BYE", "CONTROL", "DEFAULT_MAX_BYTES",
           "MAX_REASON_BYTES", "MAX_CONTROL_BYTES"]

MAGIC = 0x4D53504C  # "MSPL"
VERSION = 3  # 2: the CONTROL op, headers travel sealed; 3: micro-batch, codec and payload fields
MAX_NDIM = 8
HEADER_LEN = 12 + MAX_NDIM + 3
MAX_MICRO = 1 << 16  # micro-batches of one step
DATA, BYE, CONTROL = 0, 1, 2
_OPS = (DATA, BYE, CONTROL)
DEFAULT_MAX_BYTES = 1 << 30  # 1 GiB: far above a 3D activation batch, far below what would exhaust a node
MAX_REASON_BYTES = 4096
MAX_CONTROL_BYTES = 16 << 20  # an epoch report with its audit rows is a few kB

KINDS: tuple[Kind, ...] = tuple(Kind)
# PHASES comes from the wire module: one list of phases for the engine and the header.
# The whitelist; an id is the position here, so append only (never reorder) and bump VERSION if removing.
DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.float64, torch.float16, torch.bfloat16,
                                   torch.int64, torch.int32, torch.uint8, torch.bool)
_DTYPE_ID = {d: i for i, d in enumerate(DTYPES)}


class NameTable:
    """Edge, party and codec-chain names <-> small integer ids, from sorted, de-duplicated name lists.

    Both ends must build it from the same plan (``NameTable.from_plan``); ``fingerprint`` tells them apart,
    so two parties that disagree on an edge's codec fail on the first message.
    """

    def __init__(self, parties: Iterable[str], edges: Iterable[str], codecs: Iterable[str] = ()) -> None:
        self.parties: tuple[str, ...] = tuple(sorted(set(parties)))
        self.edges: tuple[str, ...] = tuple(sorted(set(edges)))
        self.codecs: tuple[str, ...] = tuple(sorted(set(codecs)))
        self._party_id = {p: i for i, p in enumerate(self.parties)}
        self._edge_id = {e: i for i, e in enumerate(self.edges)}
        self._codec_id = {c: i + 1 for i, c in enumerate(self.codecs)}
        text = "\0".join(self.parties) + "\1" + "\0".join(self.edges) + "\2" + "\0".join(self.codecs)
        # 63 bits, so it is a non-negative int64.
        self.fingerprint = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1

    @classmethod
    def from_plan(cls, plan: Plan) -> NameTable:
        """Every party of the topology and every edge, label flow and weights flow the plan declares."""
        allowed = plan.allowed()
        return cls(list(plan.parties) + [p for _, _, s, d in allowed for p in (s, d)], [a[0] for a in allowed],
                   plan.codec_names())

    def party_id(self, name: str) -> int:
        if name not in self._party_id:
            raise ProtocolError(f"party '{name}' is not in this run's name table {list(self.parties)}",
                                hint="every party must build its transport from the same topology")
        return self._party_id[name]

    def edge_id(self, name: str) -> int:
        if name not in self._edge_id:
            raise ProtocolError(f"edge '{name}' is not in this run's name table",
                                hint="only edges and flows that the topology declares can be sent")
        return self._edge_id[name]

    def codec_id(self, name: str) -> int:
        if name and name not in self._codec_id:
            raise ProtocolError(f"codec '{name}' is not in this run's name table {list(self.codecs)}",
                                hint="only the codecs the topology declares for its edges can be used")
        return self._codec_id[name] if name else 0

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NameTable) and (self.parties, self.edges, self.codecs) == (
            other.parties, other.edges, other.codecs)

    def __hash__(self) -> int:
        return self.fingerprint

    def __repr__(self) -> str:
        return f"NameTable({len(self.parties)} parties, {len(self.edges)} edges, fingerprint={self.fingerprint:x})"


@dataclass(frozen=True)
class Header:
    """A decoded header: what the payload that follows is, and how many bytes it has.

    ``dtype`` and ``shape`` describe the tensor the message stands for; with a ``codec`` the payload is
    ``payload`` uint8 bytes that encode it.
    """

    step: int
    edge: str
    kind: Kind
    src: str
    dst: str
    phase: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    op: int = DATA
    micro: int = 0
    codec: str = ""
    payload: int = 0

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of the payload that follows the header."""
        return self.payload if self.codec else self.numel * _itemsize(self.dtype)

    @property
    def payload_dtype(self) -> torch.dtype:
        return torch.uint8 if self.codec else self.dtype

    @property
    def payload_shape(self) -> tuple[int, ...]:
        return (self.payload,) if self.codec else self.shape

    @classmethod
    def of(cls, msg: Message) -> Header:
        codec, payload = (msg.packed.codec, msg.tensor.numel()) if msg.packed is not None else ("", 0)
        return cls(msg.step, msg.edge, msg.kind, msg.src, msg.dst, msg.phase, msg.dtype, msg.shape,
                   micro=msg.micro, codec=codec, payload=payload)

    def message(self, tensor: torch.Tensor) -> Message:
        packed = Packed(self.codec, self.shape, self.dtype) if self.codec else None
        return Message(self.step, self.edge, self.kind, self.src, self.dst, tensor, self.phase, self.micro, packed)


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def encode(header: Header, names: NameTable) -> torch.Tensor:
    """The header as a ``(HEADER_LEN,)`` int64 tensor; refuses what ``decode`` would refuse."""
    what = f"party '{header.src}' cannot send {header.kind.value} on edge '{header.edge}' to '{header.dst}'"
    if header.dtype not in _DTYPE_ID:
        raise ProtocolError(f"{what}: dtype {header.dtype} is not one the wire carries",
                            hint=f"use one of {', '.join(str(d) for d in DTYPES)}")
    if len(header.shape) > MAX_NDIM:
        raise ProtocolError(f"{what}: {len(header.shape)} dimensions, more than the wire's {MAX_NDIM}",
                            hint="flatten trailing dimensions before the cut")
    if header.phase not in PHASES:
        raise ProtocolError(f"{what}: unknown phase '{header.phase}'", hint=f"use one of {PHASES}")
    if header.step < 0:
        raise ProtocolError(f"{what}: negative step {header.step}")
    if not 0 <= header.micro < MAX_MICRO:
        raise ProtocolError(f"{what}: micro-batch {header.micro} outside 0..{MAX_MICRO - 1}")
    if header.payload < 0 or (header.payload > 0) != bool(header.codec):
        raise ProtocolError(f"{what}: an encoded payload needs a codec and a byte count, a plain one neither")
    shape = list(header.shape) + [0] * (MAX_NDIM - len(header.shape))
    values = [MAGIC, VERSION, header.op, names.fingerprint, KINDS.index(header.kind), PHASES.index(header.phase),
              header.step, names.edge_id(header.edge) if header.op == DATA else 0, names.party_id(header.src),
              names.party_id(header.dst), _DTYPE_ID[header.dtype], len(header.shape), *shape,
              header.micro, names.codec_id(header.codec), header.payload]
    return torch.tensor(values, dtype=torch.int64)


def encode_message(msg: Message, names: NameTable) -> torch.Tensor:
    return encode(Header.of(msg), names)


def bye_header(src: str, dst: str, reason_bytes: int) -> Header:
    """A goodbye from ``src``; its payload is ``reason_bytes`` of UTF-8 text."""
    return Header(0, "", KINDS[0], src, dst, PHASES[0], torch.uint8, (reason_bytes,), op=BYE)


def control_header(src: str, dst: str, nbytes: int) -> Header:
    """A control-plane value from ``src``; its payload is ``nbytes`` of UTF-8 JSON."""
    return Header(0, "", KINDS[0], src, dst, PHASES[0], torch.uint8, (nbytes,), op=CONTROL)


def decode(tensor: torch.Tensor, names: NameTable, *, peer: str, max_bytes: int = DEFAULT_MAX_BYTES,
           expect_src: str | None = None, expect_dst: str | None = None) -> Header:
    """Validates every field of a received header; a bad one raises ``ProtocolError`` naming peer and field.

    ``expect_src``/``expect_dst``: the connection it came on fixes who may have sent it and to whom, so a
    peer cannot claim to be another party.
    """

    def bad(field: str, detail: str, hint: str | None = None) -> ProtocolError:
        return ProtocolError(f"peer '{peer}' sent a header with a bad {field}: {detail}",
                             hint=hint or "the peer runs an incompatible or faulty medsplit; the connection "
                                          "cannot be trusted further and must be re-established")

    if tensor.dtype != torch.int64 or tuple(tensor.shape) != (HEADER_LEN,):
        raise bad("layout", f"{tensor.dtype} of shape {tuple(tensor.shape)}, expected int64 ({HEADER_LEN},)")
    v = [int(x) for x in tensor.tolist()]
    magic, version, op, fingerprint, kind, phase, step, edge, src, dst, dtype, ndim = v[:12]
    micro, codec, payload = v[12 + MAX_NDIM:]
    if magic != MAGIC:
        raise bad("magic", f"{magic:#x}, expected {MAGIC:#x}", "the peer is not a medsplit transport")
    if version != VERSION:
        raise bad("version", f"{version}, this party speaks {VERSION}",
                  "run the same medsplit version at every party")
    if op not in _OPS:
        raise bad("op", f"{op}")
    if fingerprint != names.fingerprint:
        raise bad("name table", f"fingerprint {fingerprint:x}, this party's is {names.fingerprint:x}",
                  "every party must run the same topology (the same parties and edges)")
    if not 0 <= kind < len(KINDS):
        raise bad("kind", f"{kind} (0..{len(KINDS) - 1})")
    if not 0 <= phase < len(PHASES):
        raise bad("phase", f"{phase} (0..{len(PHASES) - 1})")
    if step < 0:
        raise bad("step", f"{step}")
    if not (0 <= edge < len(names.edges) if op == DATA else edge == 0):
        raise bad("edge", f"id {edge} (the table has {len(names.edges)} edges)")
    for field, pid in (("src", src), ("dst", dst)):
        if not 0 <= pid < len(names.parties):
            raise bad(field, f"party id {pid} (the table has {len(names.parties)} parties)")
    if not 0 <= dtype < len(DTYPES):
        raise bad("dtype", f"id {dtype} (0..{len(DTYPES) - 1})")
    if not 0 <= ndim <= MAX_NDIM:
        raise bad("ndim", f"{ndim} (0..{MAX_NDIM})")
    dims = v[12:12 + MAX_NDIM]
    if any(d < 0 for d in dims):
        raise bad("shape", f"negative dimension in {tuple(dims[:ndim])}")
    if any(dims[ndim:]):
        raise bad("shape", f"non-zero values beyond ndim {ndim}: {tuple(dims)}")
    if not 0 <= micro < MAX_MICRO:
        raise bad("micro-batch", f"{micro} (0..{MAX_MICRO - 1})")
    if not 0 <= codec <= len(names.codecs) or (codec and op != DATA):
        raise bad("codec", f"id {codec} (the table has {len(names.codecs)} codecs)")
    if payload < 0 or (payload > 0) != (codec > 0):
        raise bad("payload", f"{payload} bytes with codec id {codec}: an encoded payload has both, a plain one neither")
    header = Header(step, names.edges[edge] if op == DATA else "", KINDS[kind], names.parties[src],
                    names.parties[dst], PHASES[phase], DTYPES[dtype], tuple(dims[:ndim]), op, micro,
                    names.codecs[codec - 1] if codec else "", payload)
    decoded = header.numel * _itemsize(header.dtype)
    if max(header.nbytes, decoded) > max_bytes:
        raise bad("shape", f"{header.shape} of {header.dtype} is {decoded} bytes (payload {header.nbytes}), over "
                           f"the {max_bytes}-byte limit",
                  "raise max_bytes at the receiver if such tensors are expected")
    if op == BYE and (header.dtype != torch.uint8 or ndim != 1 or header.nbytes > MAX_REASON_BYTES):
        raise bad("goodbye", f"payload {header.dtype} {header.shape}, expected uint8 text up to "
                             f"{MAX_REASON_BYTES} bytes")
    if op == CONTROL and (header.dtype != torch.uint8 or ndim != 1 or header.nbytes > MAX_CONTROL_BYTES):
        raise bad("control value", f"payload {header.dtype} {header.shape}, expected uint8 JSON up to "
                                   f"{MAX_CONTROL_BYTES} bytes")
    if expect_src is not None and header.src != expect_src:
        raise bad("src", f"'{header.src}' on the connection from '{expect_src}'", "a peer may only speak for itself")
    if expect_dst is not None and header.dst != expect_dst:
        raise bad("dst", f"'{header.dst}' on a connection to '{expect_dst}'")
    return header
