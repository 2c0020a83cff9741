"""What a ``festgym profile`` run measures (:class:`Plan`) and how it runs (:class:`ProfileRun`).
No torch here, so that the command line (``festgym profile --help``) reads them without the train
extra; :mod:`festgym.profiles.profiler.run` carries them out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Plan:
    """What to measure (``festgym profile`` takes one option per field)."""

    tokens: tuple[int, ...] = (128, 512, 1024, 2048, 4096, 8192)
    """Prefill: one prompt of this many tokens per step (the profile grid's definition)."""
    batches: tuple[int, ...] = (1, 8, 32, 64, 128, 256)
    """Decode batch sizes."""
    ctxs: tuple[int, ...] = (512, 2048, 8192)
    """Decode contexts: every batch × context is measured; a point whose KV cache does not fit is skipped."""
    shares: tuple[float, ...] = (1.0,)
    """SM shares, e.g. 1,0.5,0.25 (below 1 needs CUDA green contexts)."""
    clocks_mhz: tuple[int, ...] = field(default=(), metadata={"cli": False})
    """Clocks to lock in turn (root only); empty: the clock the GPU runs (``--sweep-clocks`` picks them)."""
    warmup: int = 3
    """Untimed steps per point."""
    repeats: int = 10
    """Timed steps per point (their median is the point's time)."""
    min_window_s: float = field(default=0.5, metadata={"aliases": ("--window",)})
    """Shortest energy window, s (the counter's resolution makes shorter ones noisy)."""

    @classmethod
    def tiny(cls) -> Plan:
        """A plan that exercises the pipeline in seconds on a CPU."""
        return cls(tokens=(8, 32, 64), batches=(1, 4), ctxs=(16, 64), warmup=1, repeats=3, min_window_s=0.02)


@dataclass
class ProfileRun:
    """One ``festgym profile`` invocation (the command takes one option per field)."""

    model_config: Path
    """Hugging Face config.json of the model, or a shipped model's name (Llama-3.1-8B)."""
    out: Path
    """Profile folder to write, e.g. H100-SXM-80GB/Llama-3.1-8B-measured under a profiles folder."""
    gpu: int = 0
    """GPU index after CUDA_VISIBLE_DEVICES."""
    gpu_spec: Path | None = None
    """GPU spec YAML or type name (default: the shipped spec matching the GPU's name; H100 on the CPU)."""
    name: str | None = None
    """Model name (default: the config's folder name)."""
    cpu: bool = False
    """Run on the CPU, without NVML (small configs only)."""
    dry_run: bool = False
    """The whole pipeline on the CPU with a tiny model of the config's family."""
    sweep_clocks: bool = False
    """Lock 5 clocks of the control range in turn (root only; the GPU is restored afterwards, even on
    failure); default: the clocks the GPU runs."""
    plan: Plan | None = field(default=None, metadata={"cli": False})
    """What to measure (default: :class:`Plan`, or :meth:`Plan.tiny` for a dry run)."""


__all__ = ["Plan", "ProfileRun"]
