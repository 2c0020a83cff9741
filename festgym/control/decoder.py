"""A local controller's action, decoded: level indices -> one GPU's :class:`GpuControl`.

One mechanism for everything that acts through levels: the environments (``LocalGPU-v0``,
``Cluster-v0``) and the trained controllers that run in the simulator
(:class:`festgym.policies.learned.LearnedLocal`). An action is a clock level, one SM-share level
per model slot and, optionally, one batch-cap level per slot (:class:`festgym.scenario.EnvSpec`
sets how many levels of each).

Slots name models. A slot whose model is not resident is ignored; the share weights
``(k + 1) / share_levels`` of the resident ones are scaled down to sum to at most 1 and
quantised (:func:`festgym.control.levels.normalize_shares`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from festgym.control.actions import GpuControl
from festgym.control.levels import clock_levels, normalize_shares
from festgym.memo import remember


def box_level(value: float, n: int) -> int:
    """The level of a ``Box(-1, 1)`` action component with ``n`` levels: ⌊(a + 1)/2 · n⌋, the top
    end included in the last level."""
    k = int((value + 1) / 2 * n)
    return k if k < n else n - 1


class LevelDecoder:
    """Decodes level indices into controls, for GPUs of the types in ``ladders`` (GPU type ->
    its supported SM clocks: a :class:`~festgym.profiles.specs.GpuSpec`'s, or what NVML lists on a host).

    Decoded controls are memoised by (GPU type, resident models, slots, levels): an agent repeats
    a few dozen distinct actions, and a :class:`GpuControl` is immutable.
    """

    def __init__(self, ladders: Mapping[str, Sequence[int]], n_clocks: int, n_shares: int,
                 batch_caps: Sequence[int] = ()):
        self.clocks = {name: clock_levels(ladder, n_clocks, name) for name, ladder in ladders.items()}
        """Clock (MHz) of each level, per GPU type."""
        self.clock_lo = {name: levels[0] for name, levels in self.clocks.items()}
        """The lowest clock level per GPU type (observations place the clock within the range)."""
        self.n_shares = n_shares
        self.batch_caps = tuple(batch_caps)
        self._memo: dict[tuple, GpuControl] = {}

    def control(self, gpu_type: str, present: tuple[str, ...], slots: Sequence[str], clock: int,
                shares: Sequence[int], caps: Sequence[int] = ()) -> GpuControl:
        """The control of a GPU of ``gpu_type`` holding ``present`` (model names), from a clock
        level, a share level per slot and optional batch-cap levels per slot."""
        key = (gpu_type, present, tuple(slots), clock, tuple(shares), tuple(caps))
        found = self._memo.get(key)
        if found is None:
            found = remember(self._memo, key, self._build(gpu_type, present, slots, clock, shares, caps))
        return found

    def _build(self, gpu_type: str, present: tuple[str, ...], slots: Sequence[str], clock: int,
               shares: Sequence[int], caps: Sequence[int]) -> GpuControl:
        resident = [(k, m) for k, m in enumerate(slots) if m in present]
        split = normalize_shares([(shares[k] + 1) / self.n_shares for k, _ in resident])
        return GpuControl(clock_mhz=self.clocks[gpu_type][clock],
                          shares={m: s for (_, m), s in zip(resident, split)} or None,
                          max_num_seqs={m: self.batch_caps[caps[k]] for k, m in resident} if len(caps) else None)


__all__ = ["LevelDecoder", "box_level"]
