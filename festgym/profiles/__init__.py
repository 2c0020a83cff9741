"""GPU × model profiles: the specs, the physics (:mod:`~festgym.profiles.roofline`), grids, the
profile format, the generator, calibration against public measurements, and the profiler that
measures one on a real GPU."""
