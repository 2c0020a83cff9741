"""GPU devices for the deploy agent: the abstract interface and NVML behind it (a simulated GPU
behind the same interface is :class:`festgym.simhost.device.SimulatedDevice`).

Import :mod:`festgym.devices.nvml` only where NVML is wanted: it imports ``pynvml``.
"""

from festgym.devices.device import (
           CLOCK_EVENTS,
           GpuDevice,
           GpuError,
           GpuLost,
           GpuNotFound,
           GpuReading,
           InvalidArgument,
           MemoryInfo,
           NoPermission,
           NotSupported,
           NvmlUnavailable,
           Utilization,
           clock_event_names,
)

__all__ = ["CLOCK_EVENTS", "GpuDevice", "GpuError", "GpuLost", "GpuNotFound", "GpuReading", "InvalidArgument",
           "MemoryInfo", "NoPermission", "NotSupported", "NvmlUnavailable", "Utilization", "clock_event_names"]
