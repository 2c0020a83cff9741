"""Measuring one model's steps on one device: timers, energy meters, SM shares and clocks.

* **Time.** Each point runs ``warmup`` untimed steps, then ``repeats`` timed ones: CUDA events on
  a GPU (device time, no host jitter), ``perf_counter`` after a synchronise on the CPU. The
  profile takes the median; the 10th and 90th percentiles are kept with it.
* **Energy.** A window of back-to-back steps long enough for the GPU's energy counter
  (``min_window_s``; NVML's counter advances every few tens of ms), read before and after
  through an :class:`EnergyMeter`: the NVML total-energy counter on a GPU, never sampled power.
  Power is the window's energy over its time.
* **SM share.** CUDA green contexts through torch (``torch.cuda.green_contexts``) where the
  installed torch has them: the steps run on a stream of a context of ``share × SMs`` SMs (whole
  SM groups), and decode graphs are captured on that stream so that they replay there. Without them
  only the whole GPU is measured and the share dimension stays modelled (the profile says which).
* **Clock.** The clock the GPU runs by default, read while the steps run (an idle GPU reads a
  low clock) and taken as the median over the run; with ``clocks_mhz`` each is locked in turn through
  :class:`~festgym.devices.device.GpuDevice` (root only) and the GPU is restored afterwards, also on
  failure or Ctrl-C.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import numpy as np
import torch

from festgym import signals
from festgym.devices.device import GpuDevice
from festgym.errors import FestgymError
from festgym.profiles.profiler.plan import Plan
from festgym.profiles.profiler.transformer import RandomTransformer

SM_GROUP = 8
"""SMs per green-context partition unit on compute capability 9.0+ (Hopper): CUDA rounds a
request up to a multiple (``cuDevSmResourceSplitByCount``)."""


class EnergyMeter(Protocol):
    """A monotonic energy counter."""

    def energy_mj(self) -> int: ...


@dataclass
class DeviceEnergy:
    """The GPU's own energy counter (NVML ``nvmlDeviceGetTotalEnergyConsumption``)."""

    device: GpuDevice

    def energy_mj(self) -> int:
        return self.device.total_energy_mj()


@dataclass
class ConstantPower:
    """A stand-in meter: energy = ``power_w`` × time since it was made (CPU mode and tests)."""

    power_w: float
    clock: Callable[[], float] = time.perf_counter
    start: float = field(init=False)

    def __post_init__(self) -> None:
        self.start = self.clock()

    def energy_mj(self) -> int:
        return int(round((self.clock() - self.start) * self.power_w * 1e3))


class Device:
    """Where the steps run: synchronisation, timing, memory, and optionally the GPU behind it."""

    def __init__(self, torch_device: torch.device, gpu: GpuDevice | None = None):
        self.torch, self.gpu = torch_device, gpu
        self.cuda = torch_device.type == "cuda"
        self.stream: torch.cuda.Stream | None = None
        """The green context's stream while a share is measured (steps and graph captures go
        there); None on the whole GPU."""

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.torch)

    def time_steps(self, step: Callable[[], object], n: int) -> list[float]:
        """Seconds of each of ``n`` steps."""
        if not self.cuda:
            out = []
            for _ in range(n):
                start = time.perf_counter()
                step()
                out.append(time.perf_counter() - start)
            return out
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n)]
        for begin, end in events:
            begin.record()
            step()
            end.record()
        self.sync()
        return [begin.elapsed_time(end) / 1e3 for begin, end in events]

    def release(self) -> None:
        """Give freed tensors back to the device (torch caches them), so that the next point's
        fit check sees the memory."""
        if self.cuda:
            torch.cuda.empty_cache()

    def free_bytes(self) -> int:
        if self.cuda:
            return torch.cuda.mem_get_info(self.torch)[0]
        return 1 << 62  # the CPU plan is tiny

    def read_clock(self) -> dict:
        """The SM clock and the clock-event (throttle) reasons now, if there is a GPU to ask."""
        if self.gpu is None:
            return {}
        return {"clock_read_mhz": self.gpu.sm_clock_mhz(), "clock_events": ",".join(self.gpu.clock_events())}

    def share_mechanism(self) -> str:
        """``green-context`` where this torch and GPU partition SMs; else ``none``."""
        if self.cuda and getattr(torch.cuda, "green_contexts", None) is not None and \
                torch.cuda.green_contexts.SUPPORTED:
            return "green-context"
        return "none"

    @contextmanager
    def share(self, share: float, sm_count: int) -> Iterator[float]:
        """Run the block on ``share`` of the SMs; yields the share really used (green contexts
        take whole SM groups: ``SM_GROUP`` SMs on compute capability 9+, 2 before)."""
        if share >= 1.0:
            yield 1.0
            return
        if self.share_mechanism() != "green-context":
            raise FestgymError(f"SM share {share:g}: this torch or device has no CUDA green contexts; measure "
                               "share 1 only (the profile then models the share dimension)")
        group = SM_GROUP if torch.cuda.get_device_capability(self.torch)[0] >= 9 else 2
        num_sms = partition_sms(share, sm_count, group)
        context: Any = torch.cuda.green_contexts.GreenContext.create(num_sms=num_sms, device_id=self.torch.index)
        context.set_context()
        self.stream = context.Stream()  # a stream of the partition: its kernels run on its SMs
        try:
            with torch.cuda.stream(self.stream):
                yield num_sms / sm_count
        finally:
            self.stream = None
            context.pop_context()

    @contextmanager
    def clock(self, clock_mhz: int | None) -> Iterator[int | None]:
        """Lock the SM clock for the block (None: leave it, and yield None: the clock is read
        under load); yields the clock it runs at."""
        if clock_mhz is None:
            yield None
            return
        if self.gpu is None:
            raise FestgymError("--sweep-clocks needs a GPU (NVML); the CPU has no SM clock to lock")
        try:
            self.gpu.set_locked_sm_clocks_mhz(clock_mhz, clock_mhz)
            yield clock_mhz
        finally:
            with signals.deferred():
                self.gpu.restore()


def partition_sms(share: float, sm_count: int, group: int) -> int:
    """The SMs a green context of ``share`` gets: whole groups, rounded up, at least one group."""
    return min(sm_count, max(group, math.ceil(share * sm_count / group) * group))


def measure_point(device: Device, meter: EnergyMeter | None, step: Callable[[], object], plan: Plan) -> dict:
    """Median step time (and p10, p90) and, with a meter, the energy of a window of steps."""
    for _ in range(plan.warmup):
        step()
    device.sync()
    times = device.time_steps(step, plan.repeats)
    median = statistics.median(times)
    p10, p90 = np.percentile(times, [10, 90])  # interpolated: with few repeats, not just min and max
    row = {"time_s": median, "time_p10_s": float(p10), "time_p90_s": float(p90), "repeats": plan.repeats}
    if meter is not None:
        n = max(plan.repeats, math.ceil(plan.min_window_s / max(median, 1e-9)))
        device.sync()
        e0, t0 = meter.energy_mj(), time.perf_counter()
        for _ in range(n):
            step()
        under_load = device.read_clock()  # before the sync: the GPU is still busy
        device.sync()
        seconds, energy_j = time.perf_counter() - t0, (meter.energy_mj() - e0) / 1e3
        row.update(window_steps=n, window_s=seconds, energy_j=energy_j, power_w=energy_j / seconds, **under_load)
    elif device.gpu is not None:
        step()
        row.update(device.read_clock())
        device.sync()
    return row


def kv_bytes(model: RandomTransformer, batch: int, ctx: int) -> int:
    spec = model.spec
    return 2 * spec.num_layers * batch * spec.num_kv_heads * (ctx + 1) * spec.head_dim * model.embed.element_size()


def measure(model: RandomTransformer, device: Device, plan: Plan, meter: EnergyMeter | None,
            sm_count: int, progress: Callable[[str], None] = lambda _: None) -> list[dict]:
    """Every point of ``plan``: rows of phase, tokens / batch and ctx, share, clock and figures.
    Decode points whose KV cache would not fit are rows with ``skipped`` set."""
    rows: list[dict] = []
    for clock in plan.clocks_mhz or (None,):
        with device.clock(clock) as running:
            first = len(rows)
            for share in plan.shares:
                with device.share(share, sm_count) as share:  # the share really used
                    for tokens in plan.tokens:
                        progress(f"prefill tokens={tokens} share={share:g} clock={running}")
                        figures = measure_point(device, meter, partial(model.prefill, 1, tokens), plan)
                        rows.append({"phase": "prefill", "tokens": tokens, "share": share, "clock_mhz": running,
                                     **figures})
                    for batch in plan.batches:
                        for ctx in plan.ctxs:
                            rows.append(_decode_point(model, device, meter, plan, batch, ctx, share, running,
                                                      progress))
            if clock is None:  # an idle GPU reads a low clock: the run's clock is the one read under load
                reads = [r["clock_read_mhz"] for r in rows[first:] if r.get("clock_read_mhz") is not None]
                for r in rows[first:]:
                    r["clock_mhz"] = statistics.median(reads) if reads else None
    return rows


def _decode_point(model: RandomTransformer, device: Device, meter: EnergyMeter | None, plan: Plan, batch: int,
                  ctx: int, share: float, clock: int | None, progress: Callable[[str], None]) -> dict:
    row = {"phase": "decode", "batch": batch, "ctx": ctx, "share": share, "clock_mhz": clock}
    need = kv_bytes(model, batch, ctx)
    if need > 0.9 * device.free_bytes():
        return {**row, "skipped": f"KV cache {need / 1e9:.1f} GB does not fit"}
    progress(f"decode batch={batch} ctx={ctx} share={share:g} clock={clock}")
    model.allocate_cache(batch, ctx)
    try:
        return {**row, **measure_point(device, meter, model.decode_step(device.stream), plan)}
    finally:
        model.cache = None
        device.release()


__all__ = ["ConstantPower", "Device", "DeviceEnergy", "EnergyMeter", "measure", "measure_point",
           "partition_sms"]
