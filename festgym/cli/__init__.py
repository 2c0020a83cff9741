"""The ``festgym`` command line: one module per group of commands (:mod:`festgym.cli.main` lists
them); options come from the config dataclasses of the jobs they run (:mod:`festgym.cli.fields`)."""
