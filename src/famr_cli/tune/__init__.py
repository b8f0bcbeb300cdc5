"""The tuning protocol: every method searched with the same number of Optuna trials, selected on validation.

``space`` holds each method's declared search space, ``study`` the resumable Optuna study and its
trials file, ``sweeper`` the Hydra sweeper that runs trials as famr-run jobs (``hydra/sweeper=optuna_gap``),
``tuned_file`` what a finished search writes into ``conf/method/tuned/``, and ``cli`` the ``famr-tune``
command that runs the protocol for a list of methods. docs/tuning.md describes it.
"""
