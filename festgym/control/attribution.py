"""The split of a shared GPU's power among the engines on it: one rule for the simulator and the host.

A GPU's power is not a sum of per-engine meters, so who bears what is a stated choice, not a
measurement. festgym's rule, applied by the simulator at every change of power
(:mod:`festgym.sim.gpu`) and by the deploy agent to each interval's energy-counter reading
(:mod:`festgym.deploy.agent`); it is linear, so it splits watts and joules alike:

* **static**: the power up to the floor a GPU draws while it holds engines (resident idle power at
  its clock) goes to every engine on it, busy, idle, loading or asleep, in proportion to the SM
  share the GPU gives it (equally where no share is known);
* **dynamic**: the power above the floor goes to the engines that ran, in proportion to their
  dynamic power (in the simulator, each profile's power at its share and the clock less the
  intercept; on a host, where no engine's power can be read, the share of each engine that ran);
* **loading**: with nothing running, the power above the floor goes to the engines loading, equally;
* with neither, what is above the floor (a host reads more than the modelled floor) is static too.

A compiled module (mypyc): the simulator calls it on every GPU update shared by several engines.
"""

from __future__ import annotations

ENERGY_PARTS = ("static", "dynamic", "loading")
"""The parts of an engine's energy, in the order of each triple :func:`split_power` returns."""


def split_power(power: float, floor: float, shares: list[float], dynamic: list[float],
                loading: list[bool]) -> list[tuple[float, float, float]]:
    """Each engine's (static, dynamic, loading) part of ``power`` (W, or J over an interval), given
    the GPU's resident ``floor`` and, per engine, the SM share it holds, its dynamic power (0 if it
    did not run) and whether it was loading. The parts add up to ``power``; an empty list of engines
    bears nothing."""
    n = len(shares)
    if n == 0:
        return []
    if n == 1:
        return [split_alone(power, floor, dynamic[0] > 0.0, loading[0])]
    static = power if power < floor else floor
    extra = power - static
    running = 0.0
    for d in dynamic:
        running += d
    loaders = 0
    for flag in loading:
        if flag:
            loaders += 1
    held = 0.0
    for s in shares:
        held += s
    if running <= 0.0 and loaders == 0:  # nobody to bear the rest: it is static too
        static, extra = power, 0.0
    out: list[tuple[float, float, float]] = []
    for i in range(n):
        # Fractions first: a product with a subnormal weight would lose the ratio before the division.
        part = static * (shares[i] / held) if held > 0.0 else static / n
        if running > 0.0:
            out.append((part, extra * (dynamic[i] / running), 0.0))
        else:
            out.append((part, 0.0, extra / loaders if loading[i] else 0.0))
    return out


def split_alone(power: float, floor: float, running: bool, loading: bool) -> tuple[float, float, float]:
    """:func:`split_power` for a GPU with one engine (the simulator's common case, without lists): it
    bears it all, what is above the floor as dynamic if it ran, as loading if it loaded, else static."""
    static = power if power < floor else floor
    extra = power - static
    if running:
        return static, extra, 0.0
    if loading:
        return static, 0.0, extra
    return power, 0.0, 0.0
