"""``festgym profile``: measure a (GPU, model) profile on a real GPU (or, to test the pipeline,
on the CPU) and write it in the standard profile format (needs torch: the ``train`` extra)."""
