"""Retrain: train from scratch on D_r = D \\ D_f with the original's recipe and seed — the gold standard.

The retrained model is trained once per (dataset, backbone, recipe, seed, forget set) and cached
(model_store.get_retrain_model); this method hands that model out, and reports the time its training
took as its unlearning time, so RTE tables compare every method with what Retrain really costs.
"""

from __future__ import annotations

import torch.nn as nn

from famr_cli.method import METHODS, UnlearnContext, UnlearningMethod, UnlearnReport


@METHODS.register("retrain")
class Retrain(UnlearningMethod):
    @property
    def data_read(self) -> str:
        return "retain"  # trained from scratch on D_r

    def unlearn(self, model: nn.Module, ctx: UnlearnContext) -> UnlearnReport:
        if ctx.retrain_reference is None:
            raise RuntimeError("method=retrain needs the pipeline's retrain reference")
        reference, train_s = ctx.retrain_reference()
        model.load_state_dict(reference.state_dict())
        return UnlearnReport(recorded_s=train_s)
