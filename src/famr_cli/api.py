"""famr from Python: unlearn any ``torch.nn.Module`` with a registered method, score it beside a
reference, and read the method's certificate, without the runner (docs/api.md).

    from famr_cli import api
    data = api.UnlearningData.from_batches(forget=forget_loader, retain=retain_loader, test=test_loader, num_classes=10)
    result = api.unlearn(model, data, method="famr", lam=0.1, epochs=20)   # a new model; ``model`` is left as it was
    report = api.evaluate(result.model, data, reference=retrained)         # UA/RA/TA, MIA-Efficacy, Avg. Gap to it

These are the functions ``famr-run`` runs (the timed unlearning step, the method's ``certify``, the
one scoring and comparison); the runner adds the data, the trained models, the cache and the files.
Images are taken as the model eats them (float tensors, already normalised): famr does no
preprocessing of its own here.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
from omegaconf import DictConfig, OmegaConf

from famr_cli.assessment import Evaluation
from famr_cli.config_schema import CONFIG_DIR, check_known_keys
from famr_cli.dataset import ImageData
from famr_cli.errors import FamrError
from famr_cli.evaluate.metrics import parameter_distance
from famr_cli.evaluate.model_eval import predict_all
from famr_cli.evaluate.report import EvalSettings, compare_to_reference, evaluate_model_scores
from famr_cli.forget import ForgetSplit
from famr_cli.method import METHODS, UnlearnContext, UnlearningMethod
from famr_cli.pipeline import unlearn as timed_unlearn

Pair = tuple[torch.Tensor, torch.Tensor]


def _collect(part: str, source: Any) -> Pair:
    """(images, labels) from a pair of tensors or from anything that yields (images, labels) batches."""
    if isinstance(source, (tuple, list)) and len(source) == 2 and all(isinstance(t, torch.Tensor) for t in source):
        x, y = source
    else:
        try:
            batches = [(batch[0], batch[1]) for batch in source]
        except (TypeError, IndexError) as err:
            raise FamrError(f"{part} must be an (images, labels) pair of tensors or a DataLoader of such batches ({err}).") from None
        if not batches:
            raise FamrError(f"{part} holds no images; pass at least one (images, labels) batch.")
        x, y = torch.cat([b[0] for b in batches]), torch.cat([torch.as_tensor(b[1]) for b in batches])
    if not x.is_floating_point() or x.dim() != 4:
        raise FamrError(
            f"{part} images must be a float N x C x H x W tensor, normalised as the model expects (got {x.dtype}, {tuple(x.shape)})."
        )
    if len(x) != len(y) or len(x) == 0:
        raise FamrError(f"{part} needs as many labels as images, and at least one of each (got {len(x)} images, {len(y)} labels).")
    return x.detach().cpu().float(), y.detach().cpu().long()


@dataclass
class UnlearningData:
    """D_f, and optionally D_r and a test set, as model-ready float images with integer labels.

    ``forgotten_classes`` decides which test images count as forgotten (forget-test accuracy) and
    which as retained (TA, the MIA's non-members): by default the classes of D_f that D_r never
    shows (class forgetting), or, without D_r, every class of D_f. Pass ``[]`` for sample forgetting.
    """

    forget: Pair
    retain: Pair | None = None
    test: Pair | None = None
    num_classes: int | None = None
    forgotten_classes: list[int] | None = None
    _image_data: ImageData | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.forget = _collect("forget", self.forget)
        self.retain = None if self.retain is None else _collect("retain", self.retain)
        self.test = None if self.test is None else _collect("test", self.test)
        labels = torch.cat([pair[1] for pair in (self.forget, self.retain, self.test) if pair is not None])
        if self.num_classes is None:
            self.num_classes = int(labels.max()) + 1
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise FamrError(
                f"labels must lie in 0..{self.num_classes - 1} (got {int(labels.min())}..{int(labels.max())}); set num_classes."
            )
        if self.forgotten_classes is None:
            forget_classes = set(self.forget[1].tolist())
            shown = set() if self.retain is None else set(self.retain[1].tolist())
            self.forgotten_classes = sorted(forget_classes - shown)

    @classmethod
    def from_batches(
        cls,
        forget: Iterable,
        retain: Iterable | None = None,
        test: Iterable | None = None,
        num_classes: int | None = None,
        forgotten_classes: list[int] | None = None,
    ) -> UnlearningData:
        """The same, from DataLoaders (or any iterables) of (images, labels) batches."""
        return cls(forget, retain, test, num_classes, forgotten_classes)

    def image_data(self) -> ImageData:
        """The famr view: D_f's rows first, then D_r's, as the training set; the test set as given."""
        if self._image_data is None:
            retain = self.retain or (self.forget[0][:0], self.forget[1][:0])
            test = self.test or (self.forget[0][:0], self.forget[1][:0])
            channels = self.forget[0].shape[1]
            self._image_data = ImageData(
                x_train=torch.cat([self.forget[0], retain[0]]),
                y_train=torch.cat([self.forget[1], retain[1]]),
                x_test=test[0],
                y_test=test[1],
                class_names=[str(k) for k in range(int(self.num_classes))],
                # Identity normalisation: the images arrive normalised already.
                mean=(0.0,) * channels,
                std=(1.0,) * channels,
                provenance={"source": "famr_cli.api"},
            )
        return self._image_data

    def split(self) -> ForgetSplit:
        n_forget, n_retain = len(self.forget[1]), 0 if self.retain is None else len(self.retain[1])
        y_test = self.image_data().y_test
        in_forgotten = torch.isin(y_test, torch.tensor(self.forgotten_classes, dtype=torch.long))
        return ForgetSplit(
            forget_train=torch.arange(n_forget),
            retain_train=torch.arange(n_forget, n_forget + n_retain),
            forget_test=in_forgotten.nonzero().squeeze(1),
            retain_test=(~in_forgotten).nonzero().squeeze(1),
            description=f"{n_forget} samples given through famr_cli.api",
            forgotten_classes=list(self.forgotten_classes),
        )


@dataclass
class Unlearned:
    """What :func:`unlearn` returns: the new model, the seconds the unlearning step took, the per-epoch
    losses and the certificate figures (results.json's ``certificate`` section)."""

    model: nn.Module
    seconds: float
    epoch_losses: list[float]
    certificate: dict[str, Any]


def _shipped_method(option: str) -> DictConfig:
    """``conf/method/<option>.yaml`` composed as Hydra composes it: a named variant (``famr_entropy``) over
    the files its ``defaults`` list names."""
    path = CONFIG_DIR / "method" / f"{option}.yaml"
    if not path.is_file():
        METHODS.get(option)  # the registry's sentence for an unknown method
    own = OmegaConf.load(path)
    bases = [b for b in own.pop("defaults", []) if b != "_self_"]
    return OmegaConf.merge(*(_shipped_method(str(b)) for b in bases), own)


def method_config(method: str, **options: Any) -> DictConfig:
    """The shipped ``conf/method/<method>.yaml`` (a named variant included) with ``options`` set over it;
    an unknown method or key fails with the sentence ``famr-run`` gives."""
    cfg = OmegaConf.merge(_shipped_method(method), options)
    METHODS.get(cfg.name)
    check_known_keys(OmegaConf.create({"method": cfg}))
    return cfg


def build_method(method: str, **options: Any) -> UnlearningMethod:
    """A registered method with its shipped defaults and ``options``, its values checked as famr-run checks them."""
    if method == "retrain":
        raise FamrError(
            "method 'retrain' trains with famr's own recipe; train your reference yourself and pass it as evaluate(reference=...)."
        )
    cfg = method_config(method, **options)
    return METHODS.get(cfg.name)(cfg)


def eval_settings(*, batch_size: int = 1024, seed: int = 0, mia: bool = True) -> EvalSettings:
    """The shipped ``evaluate`` section (MIA, certificate and Newton settings) with these values."""
    section = OmegaConf.load(CONFIG_DIR / "evaluate" / "default.yaml")
    section.mia = mia
    return EvalSettings.from_config(OmegaConf.create({"evaluate": section, "eval_batch_size": batch_size, "seed": seed}), None)


def _device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def unlearn(
    model: nn.Module,
    data: UnlearningData,
    method: str = "famr",
    *,
    device: str | torch.device | None = None,
    seed: int = 0,
    certificate: bool = True,
    **options: Any,
) -> Unlearned:
    """Unlearn D_f from a copy of ``model`` with ``method`` (``options`` are its config keys, e.g. lam=0.1)."""
    chosen = build_method(method, **options)
    # Data without forgotten classes is sample forgetting: a class-only method (forget_specs) has no meaning there.
    if chosen.forget_specs is not None and "sample" not in chosen.forget_specs and not data.forgotten_classes:
        raise FamrError(
            f"method '{method}' is defined for class forgetting only, but this data forgets no whole class (forgotten_classes is empty); "
            "pass every sample of the classes to forget as forget= and none in retain=, or pick another method."
        )
    if chosen.reads_retained_data and data.retain is None:
        raise FamrError(f"method '{method}' trains on the retained data: pass retain= to UnlearningData (FAMR needs none).")
    dev = _device(model, device)
    original = copy.deepcopy(model).to(dev)
    chosen.check_model(original)
    ctx = UnlearnContext(data.image_data(), data.split(), dev, seed)
    unlearned, report, seconds = timed_unlearn(chosen, original, ctx)
    theta, theta0 = [p.detach() for p in unlearned.parameters()], [p.detach() for p in original.parameters()]
    figures = {"param_dist": parameter_distance(theta, theta0), **report.certificate}
    if certificate:
        figures.update(chosen.certify(unlearned, original, ctx, eval_settings(seed=seed)))
    return Unlearned(unlearned, report.recorded_s or seconds, report.epoch_losses, figures)


def score(
    model: nn.Module,
    data: UnlearningData,
    *,
    device: str | torch.device | None = None,
    batch_size: int = 1024,
    mia: bool = True,
    seed: int = 0,
) -> Evaluation:
    """Every figure results.json reports for one model (UA, RA, TA, the accuracies, MIA-Efficacy) and its predictions."""
    if data.retain is None or data.test is None:
        raise FamrError("scoring needs retain= and test= data as well as forget= (RA, TA and the MIA's shadow sets come from them).")
    settings = eval_settings(batch_size=batch_size, seed=seed, mia=mia)
    dev = _device(model, device)
    preds = predict_all(model, data.image_data(), dev, batch_size)
    return Evaluation(preds, evaluate_model_scores(model, preds, data.image_data(), data.split(), dev, settings))


def evaluate(
    model: nn.Module,
    data: UnlearningData,
    *,
    reference: nn.Module | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 1024,
    mia: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """``{"scores": ..., "reference": ..., "gaps": ...}``: the model's scores and, beside a reference (a
    model retrained without D_f), the reference's scores and the gaps to it (results.json's ``gaps``)."""
    mine = score(model, data, device=device, batch_size=batch_size, mia=mia, seed=seed)
    result: dict[str, Any] = {"scores": mine.scores}
    if reference is not None:
        theirs = score(reference, data, device=device, batch_size=batch_size, mia=mia, seed=seed)
        settings = eval_settings(batch_size=batch_size, seed=seed, mia=mia)
        result["reference"] = theirs.scores
        result["gaps"] = compare_to_reference(mine.scores, mine.preds, theirs.scores, theirs.preds, data.split(), settings)
    return result
