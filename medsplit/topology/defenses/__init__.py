"""Privacy defenses at the cut, composable per segment: on what a site sends (NoPeek, clipping, noise) and on
the gradient a label-owning site sends back (max-norm, Marvell). ``DEFENSES`` is their registry."""

from __future__ import annotations

from collections.abc import Callable

from ...errors import ConfigError
from ...suggest import did_you_mean
from .activation import Clip, GaussianNoise
from .base import PROTECTS, CutDefense
from .labels import Marvell, MaxNorm, marvell_covariances
from .nopeek import NOPEEK_SCALES, NoPeek, distance_correlation
from .place import cut_segments, defend, tail_segments

__all__ = ["CutDefense", "PROTECTS", "NoPeek", "NOPEEK_SCALES", "distance_correlation", "Clip", "GaussianNoise",
           "MaxNorm", "Marvell", "marvell_covariances", "DEFENSES", "LABEL_DEFENSES", "make_defense", "defend",
           "cut_segments", "tail_segments"]

#: name -> (factory of one strength, what the strength is); the CLI and the experiment YAML build from here
DEFENSES: dict[str, tuple[Callable[..., CutDefense], str]] = {
    "nopeek": (lambda s: NoPeek(s), "alpha: the dCor gradient's size next to the task's at the cut"),
    "clip": (lambda s: Clip(s), "the largest L2 norm of a patient's cut"),
    "noise": (lambda s: GaussianNoise(s), "noise standard deviation in units of the cut's RMS"),
    "max_norm": (lambda s=None: MaxNorm(), "no strength: lifts each gradient's norm to the batch's largest"),
    "marvell": (lambda s=1.0: Marvell(1.0 if s is None else s), "noise power as a multiple of |g1 - g0|^2"),
}
LABEL_DEFENSES = ("max_norm", "marvell")


def make_defense(name: str, strength: float | None = None) -> CutDefense:
    """A defense by its registry name (``noise``, ``marvell`` ...), with its strength where it has one."""
    if name not in DEFENSES:
        raise ConfigError(f"unknown defense '{name}'{did_you_mean(name, list(DEFENSES))}",
                          hint=f"choose one of: {', '.join(DEFENSES)}")
    factory, _ = DEFENSES[name]
    if strength is None and name not in LABEL_DEFENSES:
        raise ConfigError(f"defense '{name}' needs a strength", hint=f"give {DEFENSES[name][1]}")
    return factory(strength) if strength is not None or name == "marvell" else factory()
