"""What is trained: parties, segments and tasks (the model), segment builders, presets and cut defenses."""

from .defenses import CutDefense, NoPeek, distance_correlation
from .model import DATA, Party, Segment, Task, Topology
from .presets import KNOBS, PRESETS, PresetConfig, PresetSpec, build_preset, preset_spec
from .segments import cnn_body, cnn_encoder, conv_block, head, mlp, mlp_encoder, split_sequential

__all__ = ["CutDefense", "NoPeek", "distance_correlation", "DATA", "Party", "Segment", "Task", "Topology", "KNOBS",
           "PRESETS", "PresetConfig", "PresetSpec", "build_preset", "preset_spec", "cnn_body", "cnn_encoder",
           "conv_block", "head", "mlp", "mlp_encoder", "split_sequential"]
