"""The control interface between the simulator and every policy (rule-based, learned, or an env).

The simulator calls a :class:`Policy` at three moments:

* ``place(request, cluster)`` on each arrival: the GPU index to serve it on, or ``None`` to
  reject it. If the model has no instance on that GPU a cold start begins there (waking the GPU
  if parked) and the request waits for it; otherwise it joins that instance's queue.
* ``control(gpu, now)`` every control interval, for each GPU that is not parked: a
  :class:`GpuControl` (device clock, SM share per resident model, batch limits), or ``None`` to
  keep the current settings.
* ``consolidate(cluster, now)`` every consolidation interval: a list of :class:`Migrate`,
  :class:`Park`, :class:`Wake` and :class:`Unload` actions.

Policies see read-only views of live state (:class:`ClusterView`, :class:`GpuView`,
:class:`InstanceView`): properties only, no copies, so that a call costs microseconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from festgym.control.actions import Action, GpuControl
from festgym.errors import FestgymError
from festgym.sim.views import ClusterView, GpuView, Request


class ActionError(FestgymError, ValueError):
    """A policy returned an action the simulator cannot carry out (names the action and why)."""


@runtime_checkable
class Policy(Protocol):
    """What the simulator calls. Subclass :class:`BasePolicy` to get no-op defaults.

    A policy may also set ``queue_order`` (``"fcfs"``, the default, or ``"llf"``: least laxity
    first), the discipline of every instance's waiting queue for the run.
    """

    name: str

    def reset(self, cluster: ClusterView) -> None: ...

    def place(self, request: Request, cluster: ClusterView) -> int | None: ...

    def control(self, gpu: GpuView, now: float) -> GpuControl | None: ...

    def consolidate(self, cluster: ClusterView, now: float) -> Sequence[Action]: ...


class BasePolicy:
    """No control and no consolidation; placement must be given by a subclass."""

    name = "base"
    queue_order = "fcfs"

    def reset(self, cluster: ClusterView) -> None:
        """Called at the start of every run."""

    def place(self, request: Request, cluster: ClusterView) -> int | None:
        raise NotImplementedError

    def control(self, gpu: GpuView, now: float) -> GpuControl | None:
        return None

    def consolidate(self, cluster: ClusterView, now: float) -> Sequence[Action]:
        return ()
