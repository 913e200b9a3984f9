"""Fault injection for tests/test_reliability.py, kept out of the workflow's code: with this folder on
PYTHONPATH and TLM_FAULT_KILL=<rule>:<n>, a job of that rule kills itself (SIGKILL) at its n-th
atomic commit, after an output is written under its temporary name and before it is renamed: the
worst moment to die. Python imports this module as every process of the workflow starts, before
the job's script imports tlm."""

import contextlib
import os
import signal

rule, _, nth = os.environ.get("TLM_FAULT_KILL", "").partition(":")
if rule:
    import tlm.io

    commits = {"left": 0}  # armed by tlm.smk.run for a job of the rule
    atomic_path = tlm.io.atomic_path

    @contextlib.contextmanager
    def killed_at_commit(path, is_dir=False):
        with atomic_path(path, is_dir) as target:
            yield target
            if commits["left"]:  # written, not yet renamed
                commits["left"] -= 1
                if commits["left"] == 0:
                    os.kill(os.getpid(), signal.SIGKILL)

    tlm.io.atomic_path = killed_at_commit  # before any module of tlm imports it

    import tlm.smk

    run = tlm.smk.run

    def run_armed(main, snakemake):
        if snakemake.rule == rule:
            commits["left"] = int(nth)
        run(main, snakemake)

    tlm.smk.run = run_armed
