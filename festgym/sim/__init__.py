"""The cluster simulator: an event loop (:mod:`~festgym.sim.simulator`) over model instances and
simulated GPUs, with serving settings, workloads, results, and the interface policies implement
and the views they read. See :mod:`festgym.sim.simulator` for how the parts fit."""
