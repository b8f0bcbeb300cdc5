"""Which test module `make test`'s two xdist workers take next (``--dist loadfile``: whole modules).

The quickstart's two models take the longest single job (the trainer module's fixture), and three
modules only copy them. Collection sorts the modules into turns (``module_turns``): the trainer, the
other slow modules, the modules that wait for the models, the fast ones; within a turn the longest
first (``module_seconds.json``, seconds per module under `make test`, rewritten by ``pytest
--record-module-seconds``), so what is left for the end are short modules that even out the two
workers. Each worker writes the turns into the run's temp root.

The scheduler here (``QuickstartAwareScheduling``) hands a worker that asks for work the first module
in that order, except that a module waiting for the models goes first as soon as they exist, and never
before (a worker that took one early would only wait on the lock). So the worker that finishes the
training goes on with the modules that need its models at once, instead of meeting them at the end of
the queue with the other worker idle.
"""

from __future__ import annotations

import json
from pathlib import Path

TRAINER, SLOW, WAITS_FOR_MODELS, FAST = range(4)
TURNS_FILE = "module_turns.json"
SECONDS_FILE = Path(__file__).with_name("module_seconds.json")
# A module the seconds file does not know yet: among the first of the slow ones, among the last of the fast.
UNKNOWN_SECONDS = {SLOW: 60.0, FAST: 0.0}


def module_of(nodeid: str) -> str:
    return nodeid.split("::")[0]


def module_turns(items, quickstart_fixtures: set[str]) -> dict[str, int]:
    """Each module's turn: the trainer first, then the other slow modules, then the modules that wait for
    the quickstart's models, last the fast ones (which fill the gap the slow ones leave at the end)."""
    modules: dict[str, set[str]] = {}
    slow: set[str] = set()
    for item in items:
        module = module_of(item.nodeid)
        modules.setdefault(module, set()).update(getattr(item, "fixturenames", ()))
        if item.get_closest_marker("slow"):
            slow.add(module)
    needs_models = sorted(m for m, names in modules.items() if quickstart_fixtures & names)
    trainer = next((m for m in needs_models if m.endswith("test_cli.py")), needs_models[0] if needs_models else None)

    def turn(module: str) -> int:
        if module == trainer:
            return TRAINER
        if module in needs_models:
            return WAITS_FOR_MODELS
        return SLOW if module in slow else FAST

    return {module: turn(module) for module in modules}


def run_order(turns: dict[str, int]):
    """The sort key of a test: its module's turn, then the module's recorded seconds, longest first."""
    seconds = json.loads(SECONDS_FILE.read_text()) if SECONDS_FILE.is_file() else {}

    def key(item) -> tuple[int, float, str]:
        module = module_of(item.nodeid)
        turn = turns[module]
        return turn, -seconds.get(module, UNKNOWN_SECONDS.get(turn, 0.0)), module

    return key


class SecondsRecorder:
    """Seconds per module (setup, call and teardown of its tests, as the reports give them), merged into
    ``SECONDS_FILE`` at the end of the run: ``pytest --record-module-seconds`` under `make test`'s options."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def pytest_runtest_logreport(self, report) -> None:
        module = module_of(report.nodeid)
        self.seconds[module] = self.seconds.get(module, 0.0) + report.duration

    def pytest_sessionfinish(self) -> None:
        known = json.loads(SECONDS_FILE.read_text()) if SECONDS_FILE.is_file() else {}
        known.update({module: round(seconds, 1) for module, seconds in self.seconds.items()})
        SECONDS_FILE.write_text(json.dumps(dict(sorted(known.items())), indent=1) + "\n")


def make_scheduler(config, log, models_ready: Path, turns_file: Path):
    """The scheduler for ``--dist loadfile``; imported here so a run without xdist never needs it."""
    from xdist.scheduler import LoadFileScheduling

    class QuickstartAwareScheduling(LoadFileScheduling):
        turns: dict[str, int] | None = None  # read once: work is assigned only after every worker collected

        def _assign_work_unit(self, node) -> None:
            self.workqueue.move_to_end(self._next_module(), last=False)  # the base class takes the first
            super()._assign_work_unit(node)

        def _next_module(self) -> str:
            if self.turns is None:
                self.turns = json.loads(turns_file.read_text()) if turns_file.is_file() else {}
            turns = self.turns
            waiting = [m for m in self.workqueue if turns.get(m) == WAITS_FOR_MODELS]
            if waiting and models_ready.exists():
                return waiting[0]
            others = [m for m in self.workqueue if turns.get(m) != WAITS_FOR_MODELS]
            return (others or waiting)[0]

    return QuickstartAwareScheduling(config, log)
