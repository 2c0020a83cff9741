"""SM-share actuators: how the deploy agent gives each served model its share of a GPU's SMs.

On real hosts shares go through CUDA MPS: every engine is an MPS client and
``nvidia-cuda-mps-control``'s ``set_active_thread_percentage <server PID> <percent>`` caps the
SMs an MPS server's clients may use. **Its limit:** the percentage applies to clients that
connect *after* the command; engines already running keep the share they started with, so a new
share takes effect only when the engine restarts (or for engines started with
``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE``). Per-model shares also need one MPS server per engine
(servers are per user: run each engine as its own user). Hence the default is
:class:`AdvisoryShares`, which applies nothing and reports the shares it would set;
:class:`MpsShares` drives MPS for operators who restart engines on a new share.
:class:`festgym.simhost.device.SimulatedShares` applies shares in the simulator.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping

from festgym.devices.device import GpuError, NotSupported

MPS_CONTROL = "nvidia-cuda-mps-control"


class ShareActuator:
    """Sets the SM share of each served model (fractions in (0, 1] summing to at most 1)."""

    applies = True
    """Whether :meth:`set_shares` changes anything (advisory actuators only report)."""

    def __init__(self) -> None:
        self.shares: dict[str, float] = {}
        """The shares last set (or advised)."""

    def set_shares(self, shares: Mapping[str, float]) -> None:
        changed = {m: s for m, s in shares.items() if self.shares.get(m) != s}
        if changed:
            self._apply(changed)

    def _apply(self, shares: Mapping[str, float]) -> None:
        """Set and record the shares one model at a time, so that a failure part-way leaves
        ``shares`` saying what was set (and :meth:`restore` undoes it)."""
        for model, share in shares.items():
            self._apply_one(model, share)
            self.shares[model] = share

    def _apply_one(self, model: str, share: float) -> None:
        """Set one model's share (actuators that set all at once override :meth:`_apply`)."""
        raise NotImplementedError

    def restore(self) -> tuple[str, ...]:
        """Give every model its whole GPU back (100%); returns the models reset."""
        reset = tuple(m for m, s in self.shares.items() if s != 1.0)
        if reset and self.applies:
            self._apply({m: 1.0 for m in reset})
        self.shares.clear()
        return reset


class AdvisoryShares(ShareActuator):
    """Applies nothing: the shares appear in the agent's log as advice."""

    applies = False

    def _apply_one(self, model: str, share: float) -> None:
        pass


class MpsShares(ShareActuator):
    """Sets each model's MPS server's active thread percentage (``servers``: model -> server PID).

    Affects only clients that start afterwards (see the module docstring)."""

    def __init__(self, servers: Mapping[str, int], control: str = MPS_CONTROL):
        super().__init__()
        self.servers = dict(servers)
        found = shutil.which(control)
        if found is None:
            raise NotSupported(f"{control} not found on PATH: start the MPS control daemon "
                               f"('{control} -d'), or use advisory shares (the default)")
        self.control = found

    def command(self, model: str, share: float) -> str:
        """The control command that gives ``model`` ``share`` of the SMs."""
        if model not in self.servers:
            raise GpuError(f"MPS shares: no MPS server PID for model {model!r} (have {', '.join(self.servers)})")
        return f"set_active_thread_percentage {self.servers[model]} {max(1, round(share * 100))}"

    def _apply_one(self, model: str, share: float) -> None:
        cmd = self.command(model, share)
        try:
            done = subprocess.run([self.control], input=cmd + "\n", capture_output=True, text=True, timeout=5)
        except subprocess.TimeoutExpired:
            raise GpuError(f"MPS: '{cmd}' timed out after 5 s (is the MPS control daemon hung?)") from None
        if done.returncode != 0 or "error" in done.stdout.lower():
            raise GpuError(f"MPS: '{cmd}' failed: {(done.stderr or done.stdout).strip() or done.returncode}")


__all__ = ["MPS_CONTROL", "AdvisoryShares", "MpsShares", "ShareActuator"]
