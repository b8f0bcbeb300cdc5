"""``logger=none``: results go only to the run directory's files."""

from __future__ import annotations

from famr_cli.logger import LOGGERS, ExperimentLogger


@LOGGERS.register("none")
class NoLogger(ExperimentLogger):
    """Records nothing: every call is the base class's no-op."""
