"""What the deploy agent knows of a host's power, to split its energy counter among the engines.

A host reads one energy counter per GPU; the split (:func:`festgym.control.attribution.split_power`,
the simulator's rule) needs two figures a counter cannot give, taken from festgym's own models:

* the **floor**: the power of the GPU holding engines with none running, at the clock read (its GPU
  type's spec, :meth:`festgym.profiles.specs.GpuSpec.resident_idle_w`);
* each engine's **dynamic weight** over an interval: the dynamic energy its profile gives for the
  work it reported, its output tokens as decode steps of its running batch and its prompt tokens
  as one prefill, at its share and the clock (assumption: decode contexts of ``CONTEXT_TOKENS``).
  Without a profile for every engine, the weight is the SM share of each engine that did work.

``festgym deploy`` builds it for the host's GPU and engines (:func:`festgym.cli.deploy.host_energy`,
outside the numpy-only deploy path). Measured against the simulator's exact split on the
simulated host (docs/deploy.md): the profile weights follow the engines' sizes, where share alone
credits a small model beside a large one with the large one's dynamic power.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from festgym.deploy.engine_metrics import EngineWindow
from festgym.deploy.observation import nan_to_zero

if TYPE_CHECKING:  # pragma: no cover
    from festgym.profiles.profile import Profile

CONTEXT_TOKENS = 1024.0
"""Decode context the dynamic weights assume (an engine's metrics give no mean context; band 256-4096)."""


def did_work(window: EngineWindow | None) -> bool:
    """Whether an engine ran in the interval: tokens in or out, or sequences running."""
    return window is not None and (nan_to_zero(window.prompt_tokens) + nan_to_zero(window.generation_tokens) > 0
                                   or window.running > 0)


@dataclass(frozen=True)
class HostEnergy:
    """The floor and the dynamic weights of one host GPU (either may be unknown: None)."""

    floor_w: Callable[[float], float] | None = None
    """Resident idle power at an SM clock (W); None: no floor."""
    profiles: Mapping[str, Profile] | None = None
    """Each engine's profile on this GPU type; None: weights by share."""

    def weights(self, models: Sequence[str], windows: Mapping[str, EngineWindow | None],
                shares: Mapping[str, float], clock_mhz: float) -> list[float]:
        """Each engine's dynamic weight for the interval (0 for one that did no work)."""
        out = []
        for model in models:
            window = windows.get(model)
            if window is None or not did_work(window):
                out.append(0.0)
            elif self.profiles is None:
                out.append(shares[model])
            else:
                out.append(dynamic_j(self.profiles[model], window, shares[model], clock_mhz))
        return out


def dynamic_j(profile: Profile, window: EngineWindow, share: float, clock_mhz: float) -> float:
    """The dynamic energy (above the busy-power intercept) ``profile`` gives for the work in ``window``."""
    idle = profile.gpu.idle_w
    batch = max(float(window.running), 1.0)
    energy = 0.0
    generated, prompt = nan_to_zero(window.generation_tokens), nan_to_zero(window.prompt_tokens)
    if generated > 0:
        step_s = float(profile.decode_time(batch, CONTEXT_TOKENS, share, clock_mhz))
        power = float(profile.decode_power(batch, CONTEXT_TOKENS, share, clock_mhz))
        energy += generated / batch * step_s * max(power - idle, 0.0)
    if prompt > 0:
        power = float(profile.prefill_power(prompt, share, clock_mhz))
        energy += float(profile.prefill_time(prompt, share, clock_mhz)) * max(power - idle, 0.0)
    return energy


__all__ = ["CONTEXT_TOKENS", "HostEnergy", "did_work", "dynamic_j"]
