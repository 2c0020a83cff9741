"""Calibration against public measurements: the comparisons, the fits and the fit report.

The reference data stay outside the repository (``../shared/data``); festgym keeps only the
fitted constants, written into each GPU spec with a note naming the source file.
"""
