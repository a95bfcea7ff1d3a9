"""Typed configuration: the experiment YAML every party reads, one loader and one error format."""

from .experiment import Experiment, SiteEntry, load_experiment, parse_experiment

__all__ = ["Experiment", "SiteEntry", "load_experiment", "parse_experiment"]
