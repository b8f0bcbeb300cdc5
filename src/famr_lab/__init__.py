"""Research demos and drills that sit beside famr, not inside it.

Nothing in ``famr_cli`` imports this package: it holds code that runs famr from the outside or
checks its theory on a toy problem, used by ``scripts/`` and the tests.

- ``convex_certificate``: FAMR's certificate solved exactly on a convex model (docs/theory.md,
  ``scripts/certificate_demo.py``).
- ``bad_input_drill``: every bad input of docs/errors.md through ``famr-run`` (tests/test_bad_input.py,
  ``scripts/bad_input_drill.py``, the fault drill).
- ``forkserver`` and ``forkclient``: famr-run forked from one process that imported famr once (the
  tests, the bad-input drill), and a client command that stands in for famr-run (``FAMR_RUN_COMMAND``).
"""
