"""Is it forgotten or only hidden? Checks that look past the output layer, each beside Retrain.

Each check is one class in its own module, registered once in :data:`CHECKS` under the key of its
``evaluate.robustness.<name>`` section; the section's keys other than ``enabled`` are the
constructor's arguments. A check measures one model (:meth:`RobustnessCheck.measure`) and then
compares the unlearned model's figures with Retrain's (:meth:`RobustnessCheck.compare`): a
never-seen class can be partly recoverable too, so only the excess over Retrain is the method's.
Definitions and sources: docs/robustness.md.
"""

from __future__ import annotations

from famr_cli.evaluate.robustness.base import ModelView, RobustnessCheck
from famr_cli.registry import Registry, import_submodules

CHECKS: Registry[type[RobustnessCheck]] = Registry("robustness check", "evaluate.robustness.<check>")


def register(cls: type[RobustnessCheck]) -> type[RobustnessCheck]:
    return CHECKS.register(cls.name)(cls)


__all__ = ["CHECKS", "ModelView", "RobustnessCheck", "register"]

# Every module here but the shared machinery is one check: importing it registers it.
SHARED_MODULES = {"base", "sets", "run"}
import_submodules(__name__, __path__, skip=SHARED_MODULES)
