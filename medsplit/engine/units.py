"""What a party needs to run a unit: its batch, the micro-batches of a pipelined step, replica weights as one
vector, its device, and the executor that runs one party's units in its own process (nodes and benchmarks)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..align.fingerprint import batch_fingerprint
from ..data import SiteData
from ..errors import ConfigError
from ..plan.plan import Plan
from ..plan.schedule import UnitSpec

if TYPE_CHECKING:
    from .party import PartyRunner

__all__ = ["Unit", "Batch", "FINGERPRINT_KEY", "load_batch", "split_batch", "flat_state", "load_flat_state",
           "party_device", "party_executor"]

FINGERPRINT_KEY = "_fingerprint"  # batch entry holding the keyed hash of the batch's row IDs (uint8, 32)

Batch = dict[str, torch.Tensor]


@dataclass
class Unit:
    """A scheduled unit with the batches, loaded in this process, of the sites that take part here."""

    spec: UnitSpec
    batches: dict[str, Batch] = field(default_factory=dict)


def load_batch(data: SiteData, step: int, phase: str, rows: Sequence[int], fingerprint_key: bytes | None = None
               ) -> Batch:
    """A site's batch for unit ``step``: training rows (augmented, drawn from the step's seed) for ``train``,
    validation rows otherwise. With ``fingerprint_key`` (vertical sites) it also carries the keyed hash of
    its row IDs.
    """
    train = phase == "train"
    source = data.train if train else data.val
    batch = source.batch(rows, seed=step) if train else source.batch(rows)
    if fingerprint_key is not None:
        digest = bytes.fromhex(batch_fingerprint(source.row_ids(rows), fingerprint_key))
        batch[FINGERPRINT_KEY] = torch.frombuffer(bytearray(digest), dtype=torch.uint8)
    return batch


def split_batch(batch: Batch, parts: int) -> list[Batch]:
    """A batch as ``parts`` micro-batches of consecutive rows (sizes differ by at most one, larger first,
    as every party computes them from the row count alone). The fingerprint covers the whole batch."""
    out: list[Batch] = [{} for _ in range(parts)]
    for key, value in batch.items():
        chunks = [value] * parts if key == FINGERPRINT_KEY else value.tensor_split(parts)
        for micro, chunk in zip(out, chunks, strict=True):
            micro[key] = chunk
    return out


def flat_state(module: nn.Module) -> torch.Tensor:
    """All floating parameters and buffers of a module as one vector (what travels between replicas)."""
    parts = [t.detach().reshape(-1) for t in module.state_dict().values() if t.is_floating_point()]
    return torch.cat(parts) if parts else torch.zeros(0)


def load_flat_state(module: nn.Module, vector: torch.Tensor) -> None:
    offset = 0
    with torch.no_grad():
        for t in module.state_dict().values():
            if t.is_floating_point():
                n = t.numel()
                t.copy_(vector[offset:offset + n].view_as(t))
                offset += n


def party_device(plan: Plan, party: str) -> torch.device:
    """The device a party computes on; one that is not available here is refused with the fix."""
    name = plan.parties[party].device
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"party '{party}' names device '{name}', which torch does not know",
                          hint="use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise ConfigError(f"party '{party}' is to compute on {name}, but this machine has no CUDA device that "
                          "torch can use", hint=f"run '{party}' on a machine with a GPU (and a CUDA build of "
                                                "torch), or set its device to cpu")
    return device


def party_executor(runner: PartyRunner, data: SiteData | None, fingerprint_key: bytes | None = None
                   ) -> Callable[[list[UnitSpec]], None]:
    """Runs one party's part of each unit of a group, loading its own rows: the executor of a party in a
    process of its own (a node, a benchmark process). The other parties run theirs elsewhere."""
    me = runner.name

    def execute(specs: list[UnitSpec]) -> None:
        for spec in specs:
            if me not in spec.parties:
                continue
            batches = {}
            if data is not None and me in spec.rows:
                batches[me] = load_batch(data, spec.step, spec.phase, spec.rows[me], fingerprint_key)
            runner.run_unit(Unit(spec, batches))

    return execute
