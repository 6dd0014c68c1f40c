"""The experiment engine: lifecycle, workload, history, invariant checker, journal, report."""
