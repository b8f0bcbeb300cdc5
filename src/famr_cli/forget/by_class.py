"""Class forgetting: D_f is every training sample of the chosen classes."""

from __future__ import annotations

import torch
from omegaconf import DictConfig, ListConfig

from famr_cli.dataset import DatasetShape, ImageData
from famr_cli.errors import FamrError
from famr_cli.forget import FORGET_SPECS, ForgetSpec, ForgetSplit


def resolve_classes(requested, class_names: list[str]) -> list[int]:
    """Class ids from ids or names; the error names the valid choices."""
    if not isinstance(requested, (list, tuple, ListConfig)):
        requested = [requested]
    if len(requested) == 0:
        raise FamrError("forget.classes is empty; name at least one class, e.g. forget.classes=[0].")
    ids: list[int] = []
    for item in requested:
        if isinstance(item, int) and not isinstance(item, bool):
            if not 0 <= item < len(class_names):
                raise FamrError(
                    f"forget.classes has class id {item}, but the dataset has classes 0..{len(class_names) - 1}; pick ids in that range."
                )
            ids.append(item)
        elif str(item) in class_names:
            ids.append(class_names.index(str(item)))
        else:
            raise FamrError(f"Unknown class '{item}' in forget.classes; use an id or one of: {', '.join(class_names)}.")
    if len(set(ids)) != len(ids):
        raise FamrError(f"forget.classes names a class twice ({list(requested)}); list each class once.")
    if len(ids) == len(class_names):
        raise FamrError("forget.classes covers every class, which leaves nothing to retain; forget fewer classes.")
    return sorted(ids)


@FORGET_SPECS.register("class")
class ClassForget(ForgetSpec):
    def check(self, cfg: DictConfig, shape: DatasetShape) -> None:
        resolve_classes(cfg.get("classes"), shape.class_names)

    def split(self, cfg: DictConfig, data: ImageData) -> ForgetSplit:
        classes = resolve_classes(cfg.classes, data.class_names)
        chosen = torch.tensor(classes)
        in_train = torch.isin(data.y_train, chosen)
        in_test = torch.isin(data.y_test, chosen)
        if not bool(in_train.any()):
            raise FamrError(f"No training sample belongs to forget.classes={classes}; the forget set would be empty.")
        names = ", ".join(data.class_names[c] for c in classes)
        return ForgetSplit(
            forget_train=in_train.nonzero().squeeze(1),
            retain_train=(~in_train).nonzero().squeeze(1),
            forget_test=in_test.nonzero().squeeze(1),
            retain_test=(~in_test).nonzero().squeeze(1),
            description=f"class {names}",
            forgotten_classes=classes,
        )
