"""medsplit: split learning for hospitals — train one network across sites without sharing raw patient data."""

from .data import BatchSource, SiteData, TensorTable
from .defenses import CutDefense, NoPeek, distance_correlation
from .engine import EpochRecord, SplitTrainer
from .errors import (ConfigError, DataError, MedsplitError, PeerTimeout, PrivacyError, ProtocolError,
                     TopologyError, TransportError)
from .meter import Meter, TransferRecord
from .plan import Plan, compile_topology
from .presets import PRESETS, PresetConfig, build_preset, preset_data
from .segments import cnn_body, cnn_encoder, head, mlp, mlp_encoder, split_sequential
from .topology import Party, Segment, Task, Topology
from .transport import LocalTransport, MockTransport, Transport
from .wire import Kind, Message

__version__ = "0.1.0"

__all__ = [
    "BatchSource", "SiteData", "TensorTable",
    "CutDefense", "NoPeek", "distance_correlation",
    "EpochRecord", "SplitTrainer",
    "ConfigError", "DataError", "MedsplitError", "PeerTimeout", "PrivacyError", "ProtocolError",
    "TopologyError", "TransportError",
    "Meter", "TransferRecord",
    "Plan", "compile_topology",
    "PRESETS", "PresetConfig", "build_preset", "preset_data",
    "cnn_body", "cnn_encoder", "head", "mlp", "mlp_encoder", "split_sequential",
    "Party", "Segment", "Task", "Topology",
    "LocalTransport", "MockTransport", "Transport",
    "Kind", "Message",
]
