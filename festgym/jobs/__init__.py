"""The jobs the command line runs: ``compare``/``evaluate``, ``serve-bench``, ``train`` and
``export`` (stable-baselines3), and the deploy log report."""
