"""What is trained: parties, segments and tasks (the model), segment builders, presets and cut defenses."""

from .defenses import (
                       DEFENSES,
                       LABEL_DEFENSES,
                       Clip,
                       CutDefense,
                       GaussianNoise,
                       Marvell,
                       MaxNorm,
                       NoPeek,
                       defend,
                       distance_correlation,
                       make_defense,
)
from .encoders import ENCODERS, EncoderSpec, build_encoder, default_encoder, load_factory, modality_kind
from .model import DATA, Party, Segment, Task, Topology
from .presets import KNOBS, PRESETS, PresetConfig, PresetSpec, build_preset, default_study, preset_spec
from .segments import cnn_body, cnn_encoder, conv_block, head, mlp, mlp_encoder, split_sequential
from .study import TASK_KINDS, SiteSpec, StudySpec, TaskSpec

__all__ = ["CutDefense", "NoPeek", "distance_correlation", "Clip", "GaussianNoise", "MaxNorm", "Marvell", "DEFENSES",
           "LABEL_DEFENSES", "make_defense", "defend", "DATA", "Party", "Segment", "Task", "Topology", "KNOBS",
           "PRESETS", "PresetConfig", "PresetSpec", "build_preset", "default_study", "preset_spec",
           "ENCODERS", "EncoderSpec",
           "build_encoder", "default_encoder", "load_factory", "modality_kind", "TASK_KINDS", "SiteSpec", "StudySpec",
           "TaskSpec", "cnn_body", "cnn_encoder",
           "conv_block", "head", "mlp", "mlp_encoder", "split_sequential"]
