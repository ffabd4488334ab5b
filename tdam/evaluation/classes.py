"""A model is evaluated only on data with the classes it predicts: the class-count check of every evaluation.

A model trained on the 12-class embedded data and scored on a 1000-class folder (or the other way round) gives
accuracies that mean nothing, and top-5 of a 3-class model is 100 % by construction; such runs stop here, before any
image is computed, with a :class:`ClassCountError` naming both counts and the data.
"""
from __future__ import annotations

from torch import nn
from torch.utils.data import Subset

__all__ = ["ClassCountError", "model_num_classes", "dataset_classes", "check_class_count"]


class ClassCountError(ValueError):
    """The model predicts a different number of classes than the evaluation data has."""


def model_num_classes(model: nn.Module) -> int:
    """How many classes ``model`` predicts: timm's ``num_classes`` attribute, else ``model_config['num_classes']``
    (``tdam.create_model``), else the out_features of ``get_classifier()``."""
    n = getattr(model, "num_classes", None)
    if isinstance(n, int):
        return n
    n = (getattr(model, "model_config", None) or {}).get("num_classes")
    if isinstance(n, int):
        return n
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if isinstance(head, nn.Linear):
        return head.out_features
    raise ValueError(f"cannot tell how many classes {type(model).__name__} predicts: it has no integer "
                     "`num_classes`, no model_config['num_classes'] and no linear get_classifier()")


def dataset_classes(dataset) -> tuple[int, str] | None:
    """(class count, root or name) of a dataset that lists its ``classes`` (a :class:`torch.utils.data.Subset`
    is looked through); None for one that does not."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    classes = getattr(dataset, "classes", None)
    if classes is None:
        return None
    return len(classes), str(getattr(dataset, "root", type(dataset).__name__))


def check_class_count(model: nn.Module, dataset, *, trained_on: str | None = None) -> None:
    """Raise :class:`ClassCountError` when ``model`` predicts another number of classes than ``dataset`` lists.

    ``trained_on``: how to name the data the model was trained on in the advice (e.g. "data_dir=None: the embedded
    tdam-shapes data"); None: the advice names no data. A dataset without ``classes`` is not checked.
    """
    found = dataset_classes(dataset)
    if found is None:
        return
    n_data, root = found
    n_model = model_num_classes(model)
    if n_model != n_data:
        where = f" ({trained_on})" if trained_on else ""
        raise ClassCountError(f"the model predicts {n_model} classes but {root} has {n_data}: evaluate it on the "
                              f"data it was trained on{where}")
