"""medsplit: split learning for hospitals — train one network across sites without sharing raw patient data.

Layers, from the bottom: ``topology`` (what is trained) and ``data`` (what a site's rows look like to the
engine) -> ``plan`` (validated graph, schedule) -> ``wire`` (what crosses: messages, checks, meter, audit)
and ``transport`` (how it crosses) -> ``engine`` (a party's runner, the one epoch loop, the in-process
trainer) -> ``align`` (vertical sites' common patients) and ``runtime`` (parties as processes) -> ``config``
(the experiment YAML). None of them imports ``data_adapters``, ``sites`` or ``dashboard``.
"""

from .data import BatchSource, SiteData, TensorTable
from .engine import EpochRecord, SplitTrainer
from .errors import (
                     AuthenticationError,
                     ConfigError,
                     DataError,
                     MedsplitError,
                     PeerTimeout,
                     PrivacyError,
                     ProtocolError,
                     RunError,
                     TopologyError,
                     TransportError,
)
from .plan import Plan, compile_topology
from .synthetic import preset_data
from .topology import (
                     PRESETS,
                     CutDefense,
                     NoPeek,
                     Party,
                     PresetConfig,
                     Segment,
                     Task,
                     Topology,
                     build_preset,
                     cnn_body,
                     cnn_encoder,
                     distance_correlation,
                     head,
                     mlp,
                     mlp_encoder,
                     split_sequential,
)
from .transport import TRANSPORTS, LocalTransport, MockTransport, Transport
from .wire import Kind, Message, Meter, TransferRecord

__version__ = "0.1.0"

__all__ = [
    "BatchSource", "SiteData", "TensorTable",
    "CutDefense", "NoPeek", "distance_correlation",
    "EpochRecord", "SplitTrainer",
    "AuthenticationError", "ConfigError", "DataError", "MedsplitError", "PeerTimeout", "PrivacyError",
    "ProtocolError", "RunError", "TopologyError", "TransportError",
    "Meter", "TransferRecord",
    "Plan", "compile_topology",
    "PRESETS", "PresetConfig", "build_preset", "preset_data",
    "cnn_body", "cnn_encoder", "head", "mlp", "mlp_encoder", "split_sequential",
    "Party", "Segment", "Task", "Topology",
    "TRANSPORTS", "LocalTransport", "MockTransport", "Transport",
    "Kind", "Message",
]
