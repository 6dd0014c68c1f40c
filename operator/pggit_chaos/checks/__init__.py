"""The verification checks suite: pytest + hypothesis checks that pgGit lost and corrupted nothing.

Run by verification Jobs and ``pggit-chaos checks`` through
:func:`pggit_chaos.checks.runner.run_checks`, a pytest subprocess over
``--pyargs pggit_chaos.checks``. Categories are pytest markers: ``property``, ``concurrent``,
``transaction``, ``resource``, ``corruption``, ``security`` (plus ``slow`` and
``destructive``). Strategies live in :mod:`pggit_chaos.checks.strategies`.
"""
