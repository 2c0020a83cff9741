"""What a controller may ask for: one GPU's settings (:class:`GpuControl`) and cluster moves
(:class:`Migrate`, :class:`Park`, :class:`Wake`, :class:`Unload`).

Plain frozen dataclasses, shared by the simulator (which carries them out, :mod:`festgym.sim`),
the policies that return them and the deploy agent (which applies a :class:`GpuControl` to a
real GPU through NVML).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class GpuControl:
    """Settings for one GPU; ``None`` fields keep their current value.

    ``clock_mhz`` snaps to the nearest supported clock. ``shares`` maps resident model names to
    SM shares in (0, 1] summing to at most 1. ``max_num_seqs`` caps each model's running batch
    (new admissions only; running sequences are not preempted for it).
    """

    clock_mhz: float | None = None
    shares: Mapping[str, float] | None = None
    max_num_seqs: Mapping[str, int] | None = None


@dataclass(frozen=True)
class Migrate:
    """Move ``model`` from GPU ``src`` to GPU ``dst``: the destination cold-starts while the
    source keeps serving, then the source's queue and running requests move over and the running
    ones are recomputed there (prompt and generated tokens prefilled again; KV is not copied)."""

    model: str
    src: int
    dst: int


@dataclass(frozen=True)
class Park:
    """Release the GPU as soon as it holds no instances (now, if empty): it draws its empty floor,
    and once every GPU of its node is released and empty long enough the node powers off
    (``SimConfig.node_off_after_s``). There is no per-GPU sleep state below the empty floor."""

    gpu: int


@dataclass(frozen=True)
class Wake:
    """Claim a released GPU back (at once if its node is on; after ``NodeSpec.boot_s`` if it is off)."""

    gpu: int


@dataclass(frozen=True)
class Unload:
    """Unload ``model`` from ``gpu`` once its queue and batch are empty (no keep-alive wait)."""

    model: str
    gpu: int


Action = Migrate | Park | Wake | Unload
