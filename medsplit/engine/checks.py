"""Does a site's data fit what the topology declares for it? One check, the same words in-process and at a node.

A site holds data keys of some per-sample shape and labels of some kind (``SiteHolding``); its party in the plan
declares the keys and shapes its segments read, the labels it owns, and the tasks on those labels say what kind
each must be. Any difference is a ``DataError`` naming the site, the key, what was expected and the fix; with a
``Declared`` (the experiment's file and its site entries) the fix names the key to change in that file.
"""

from __future__ import annotations

import torch

from ..data import Declared, LabelHeld, SiteHolding
from ..errors import DataError
from ..plan.plan import Plan
from ..topology.model import Task

__all__ = ["Declared", "check_site_data", "TASK_KIND"]

#: the label kind each loss trains on
TASK_KIND = {"bce": "binary", "ce": "multiclass", "mse": "regression"}


def check_site_data(plan: Plan, party: str, held: SiteHolding, *, declared: Declared | None = None,
                    require_labels: bool = True) -> None:
    """Raise a ``DataError`` unless ``held`` has every data key of ``party`` in its declared shape, and (with
    ``require_labels``) every label it owns, of the kind and classes of each task trained on it."""
    declared = declared or Declared()
    spec = plan.parties[party]
    name = declared.name(party)
    for key, shape in spec.data.items():
        _check_key(name, party, key, tuple(shape), held, declared)
    if not require_labels:
        return
    for label in spec.labels:
        if label not in held.labels:
            have = ", ".join(held.labels) or "none"
            raise DataError(f"site '{name}' has no label '{label}', which {declared.source} lists for it (its "
                            f"labels: {have})",
                            hint=declared.fix(party, "labels", f"declare it under labels: in {_yaml(held)}, or "
                                              "remove it from {key}", f"give site '{party}' a '{label}' key, "
                                              f"or remove it from Party('{party}').labels"))
        for task in plan.topology.tasks:
            if task.label == label:
                _check_label(name, party, task, plan, held.labels[label], held, declared)


def _yaml(held: SiteHolding) -> str:
    return f"the site's YAML ({held.source})" if held.source else "the site's data"


def _describe(key: str, shape: tuple[int, ...], held: SiteHolding) -> str:
    kind = held.kinds.get(key, "")
    if len(shape) == 1:
        return f"{shape[0]} columns after encoding" if kind == "table" else f"{shape[0]} features"
    return f"an image of shape {list(shape)}" + (f" ({kind})" if kind else "")


def _check_key(name: str, party: str, key: str, shape: tuple[int, ...], held: SiteHolding,
               declared: Declared) -> None:
    at = f"modalities.{key}"
    if key not in held.data:
        have = "; ".join(f"{k}: {_describe(k, tuple(s), held)}" for k, s in held.data.items()) or "nothing"
        raise DataError(f"site '{name}' has no data '{key}', which {declared.source} declares for it (it holds "
                        f"{have})",
                        hint=declared.fix(party, "modalities", "set {key} to the keys the site holds, or add "
                                          f"{at} to {_yaml(held)}", f"declare the keys the site holds in "
                                          f"Party('{party}').data, or give it '{key}'"))
    got = tuple(held.data[key])
    if got == shape:
        return
    table = len(got) == 1
    if table != (len(shape) == 1):  # a table where an image is declared, or the other way round
        what = "a table" if len(shape) == 1 else "an image"
        kind = "table" if table else "dicom"
        raise DataError(f"site '{name}' data '{key}' has {_describe(key, got, held)}, but {declared.source} "
                        f"declares {what} {list(shape)}",
                        hint=declared.fix(party, at, "set {key} to {shape: " + f"{list(got)}, kind: {kind}" + "}",
                                          f"declare Party('{party}').data['{key}'] = {got}"))
    raise DataError(f"site '{name}' data '{key}' has {_describe(key, got, held)}, but {declared.source} declares "
                    f"{list(shape)}",
                    hint=declared.fix(party, f"{at}.shape", "set {key} to " + str(list(got)),
                                      f"declare Party('{party}').data['{key}'] = {got}, or give the site data "
                                      f"of shape {shape}"))


def _check_label(name: str, party: str, task: Task, plan: Plan, label: LabelHeld, held: SiteHolding,
                 declared: Declared) -> None:
    kind = TASK_KIND[task.loss]
    classes = plan.out_shapes[task.head][0] if kind == "multiclass" else None
    wanted = f"{kind} with {classes} classes" if classes else kind
    task_fix = f"set tasks.{task.name}: {{kind: {label.kind}" + (
        f", classes: {label.classes}}}" if label.kind == "multiclass" else "}")
    site_fix = f"labels.{task.label}: {{kind: {kind}" + (f", classes: {classes}}}" if classes else "}")
    if label.kind is not None and (label.kind != kind or (classes is not None and label.classes != classes)):
        have = f"{label.kind} with {label.classes} classes" if label.kind == "multiclass" else label.kind
        raise DataError(f"site '{name}' label '{task.label}' is {have}, but task '{task.name}' of "
                        f"{declared.source} is {wanted}",
                        hint=f"write {site_fix} in {_yaml(held)}, or "
                             + (f"{task_fix} in the experiment" + (f" ({declared.file})" if declared.file else "")
                                if declared.sites else f"make the task {label.kind}"))
    if label.dtype is not None:
        integer = not label.dtype.is_floating_point and label.dtype != torch.bool
        if integer != (kind == "multiclass"):
            need = "int64 class indices" if kind == "multiclass" else "float32 values"
            raise DataError(f"site '{name}' label '{task.label}' holds {label.dtype} values, but task "
                            f"'{task.name}' is {wanted} and needs {need}",
                            hint=f"give the label as {need} (binary and regression labels are float32, multiclass "
                                 "labels int64)")
