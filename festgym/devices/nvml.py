"""NVML (nvidia-ml-py, ``import pynvml``) behind :class:`~festgym.devices.device.GpuDevice`.

Design choices:

* **Lazy binding.** ``pynvml`` is imported on first use, not when this module is imported, so that
  ``festgym.devices.nvml`` imports on any machine and a missing binding surfaces as :class:`NvmlUnavailable`
  saying what to install. Functions are looked up on the module at call time (``pynvml.<fn>``), which is
  also what lets the tests patch them.
* **One error mechanism.** Every NVML call runs inside :func:`nvml_errors`, which turns ``pynvml.NVMLError``
  into the typed errors of :mod:`festgym.devices.device` by error code (:func:`translate`). Messages name the
  GPU, the operation and NVML's error string, plus the fix where there is one (privileges, no driver).
* **Fallbacks.** Some readings have a newer and an older entry point (the instant-power field and
  ``nvmlDeviceGetPowerUsage``; ``...ClocksEventReasons`` and ``...ClocksThrottleReasons``; ``...TemperatureV``
  and ``...Temperature``). The first one that the binding has and the driver and GPU support wins; the
  error of the last one is the one reported.
* **Writes** are validated before NVML sees them (a clock between supported steps is snapped to the
  nearest: :meth:`~festgym.devices.device.GpuDevice.snap_sm_clocks_mhz`) and skipped when they would
  change nothing. NVML has no getter for locked clocks, so an :class:`NvmlDevice` remembers the range
  it locked; it cannot see (nor skip resetting) a lock left by another process.
* **Init once.** NVML is per process: :func:`init` is idempotent and :func:`open_gpus` calls it;
  :func:`shutdown` ends it (handles taken before are invalid afterwards).
* **Indices.** festgym's GPU *i* is the *i*-th device CUDA exposes after ``CUDA_VISIBLE_DEVICES``
  (:func:`visible_devices`); ``NvmlDevice.physical_index`` is NVML's index. NVML numbers GPUs in PCI bus
  order, which is CUDA's order with ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` or when all GPUs are the same model
  (CUDA's default puts the fastest first).

Units: NVML reports power and power limits in mW, energy in mJ and clocks in MHz, the units of
:mod:`festgym.devices.device`, so values pass through unscaled.
"""

from __future__ import annotations

import functools
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Any, TypeVar

from festgym.devices.device import (
    GpuDevice,
    GpuError,
    GpuLost,
    GpuNotFound,
    InvalidArgument,
    MemoryInfo,
    NoPermission,
    NotSupported,
    NvmlUnavailable,
    Utilization,
    clock_event_names,
)

PRIVILEGE_HINT = ("clock and power-limit changes need root or CAP_SYS_ADMIN: run as root, or grant the capability "
                  "with `sudo setcap cap_sys_admin+ep $(readlink -f $(which python3))`, or in Kubernetes add "
                  "`securityContext.capabilities.add: [\"SYS_ADMIN\"]`, or let festgym's privileged actuator make "
                  "the writes; `--dry-run` needs no privileges")
NO_DRIVER_HINT = ("no NVIDIA driver was found (libnvidia-ml.so.1 is missing or the kernel module is not loaded); "
                  "`festgym deploy --simulate` runs without a GPU")
MISSING_BINDING = ("NVML's Python binding is not installed: pip install nvidia-ml-py "
                   "(or pip install festgym[deploy])")

# Keyed by constant name, not number, so that a code an older binding lacks is simply not mapped.
_ERRORS: dict[str, tuple[type[GpuError], str]] = {
    "NVML_ERROR_NO_PERMISSION": (NoPermission, PRIVILEGE_HINT),
    "NVML_ERROR_NOT_SUPPORTED": (NotSupported, ""),
    "NVML_ERROR_INVALID_ARGUMENT": (InvalidArgument, ""),
    "NVML_ERROR_NOT_FOUND": (GpuNotFound, ""),
    "NVML_ERROR_GPU_NOT_FOUND": (GpuNotFound, ""),
    "NVML_ERROR_GPU_IS_LOST": (GpuLost, "the GPU fell off the bus; reset it (nvidia-smi -r) or reboot"),
    "NVML_ERROR_RESET_REQUIRED": (GpuLost, "the GPU needs a reset (nvidia-smi -r) or a reboot"),
    "NVML_ERROR_LIBRARY_NOT_FOUND": (NvmlUnavailable, NO_DRIVER_HINT),
    "NVML_ERROR_DRIVER_NOT_LOADED": (NvmlUnavailable, NO_DRIVER_HINT),
    "NVML_ERROR_LIB_RM_VERSION_MISMATCH": (NvmlUnavailable, "the NVML library and the loaded kernel driver differ "
                                                            "in version; reload the driver or reboot"),
    "NVML_ERROR_FUNCTION_NOT_FOUND": (NvmlUnavailable, "the NVIDIA driver is too old for this call"),
    "NVML_ERROR_UNINITIALIZED": (NvmlUnavailable, "NVML is not initialised (call festgym.devices.nvml.init())"),
}

# Errors after which a fallback reading is tried: the GPU, driver or field id does not know the newer call
# (a dict only so that _by_code can key it by code).
_FALLBACK_ERRORS = dict.fromkeys(("NVML_ERROR_NOT_SUPPORTED", "NVML_ERROR_FUNCTION_NOT_FOUND",
                                  "NVML_ERROR_INVALID_ARGUMENT", "NVML_ERROR_ARGUMENT_VERSION_MISMATCH"))

_T = TypeVar("_T")
_UUID_ENTRY = re.compile(r"GPU-[0-9a-fA-F-]*")


# --- the binding and its errors ---------------------------------------------------------------------

def _pynvml() -> ModuleType:
    """The binding, imported on first use so that this module imports without it."""
    try:
        import pynvml
    except ImportError as exc:
        raise NvmlUnavailable(MISSING_BINDING) from exc
    return pynvml


def _by_code(table: Mapping[str, _T]) -> dict[int, _T]:
    """``table`` keyed by the codes of the ``NVML_ERROR_*`` names it uses that this binding defines."""
    nv = _pynvml()
    return {getattr(nv, name): entry for name, entry in table.items() if hasattr(nv, name)}


def translate(exc: Exception, operation: str) -> GpuError:
    """The typed error for an ``NVMLError`` raised by ``operation`` (e.g. "GPU 0 (NVIDIA H100): read power")."""
    code: int = getattr(exc, "value", -1)  # -1: no NVML code, a plain GpuError
    cls, hint = _by_code(_ERRORS).get(code, (GpuError, ""))
    return cls(f"{operation}: {exc}" + (f"; {hint}" if hint else ""))


@contextmanager
def nvml_errors(operation: str) -> Iterator[None]:
    """Re-raise NVML errors inside the block as the typed errors of :mod:`festgym.devices.device`."""
    nv = _pynvml()
    try:
        yield
    except nv.NVMLError as exc:
        raise translate(exc, operation) from exc


def _call(operation: str, function: str, *args: Any) -> Any:
    """``pynvml.<function>(*args)``, its errors typed and named by ``operation``."""
    with nvml_errors(operation):
        return getattr(_pynvml(), function)(*args)


def _first_supported(operation: str, calls: Sequence[Callable[[], Any] | None]) -> Any:
    """The result of the first of ``calls`` that binding, driver and GPU support (None: not in the binding)."""
    available = [call for call in calls if call is not None]
    if not available:
        raise NotSupported(f"{operation}: not provided by this nvidia-ml-py version")
    nv, fallback = _pynvml(), _by_code(_FALLBACK_ERRORS)
    with nvml_errors(operation):
        for call in available[:-1]:
            try:
                return call()
            except nv.NVMLError as exc:
                if exc.value not in fallback:
                    raise
        return available[-1]()


def _text(value: str | bytes) -> str:
    # nvidia-ml-py before 11.515 returns bytes for strings.
    return value.decode() if isinstance(value, bytes) else value


def _descending(values: Sequence[int]) -> tuple[int, ...]:
    return tuple(sorted((int(v) for v in values), reverse=True))


# --- one GPU ------------------------------------------------------------------------------------------

class NvmlDevice(GpuDevice):
    """One GPU through NVML. Build with :func:`open_gpus`; ``index`` is festgym's (logical) index."""

    def __init__(self, index: int, physical_index: int, handle: Any) -> None:
        self.index = index
        self.physical_index = physical_index
        self._handle = handle
        self._label = f"GPU {index}"
        # The name never changes; read once, it also labels every error message.
        self._name = _text(self._call("read name", "nvmlDeviceGetName"))
        self._label = f"GPU {index} ({self._name})"
        self._locked_sm_mhz: tuple[int, int] | None = None
        self._original_power_limit_mw: int | None = None
        self._power_limit_set_mw: int | None = None

    def __repr__(self) -> str:
        return f"NvmlDevice(index={self.index}, physical_index={self.physical_index}, name={self._name!r})"

    def _call(self, operation: str, function: str, *args: Any) -> Any:
        return _call(f"{self._label}: {operation}", function, self._handle, *args)

    def _first_supported(self, operation: str, *calls: Callable[[], Any] | None) -> Any:
        return _first_supported(f"{self._label}: {operation}", calls)

    def _bound(self, function: str, *args: Any) -> Callable[[], Any] | None:
        """``pynvml.<function>(handle, *args)`` as a fallback candidate; None where the binding lacks it."""
        fn = getattr(_pynvml(), function, None)
        return None if fn is None else functools.partial(fn, self._handle, *args)

    def _field(self, field: str) -> Callable[[], int] | None:
        """A reader of one NVML field value (``NVML_FI_*``) as a fallback candidate."""
        nv = _pynvml()
        field_id = getattr(nv, field, None)
        if field_id is None:
            return None

        def read() -> int:
            (value,) = nv.nvmlDeviceGetFieldValues(self._handle, [field_id])
            if value.nvmlReturn != nv.NVML_SUCCESS:  # the call succeeds; each field has its own status
                raise nv.NVMLError(value.nvmlReturn)
            return int(value.value.uiVal)  # power fields are unsigned ints, in mW
        return read

    # reads
    def name(self) -> str:
        return self._name

    def uuid(self) -> str:
        return _text(self._call("read UUID", "nvmlDeviceGetUUID"))

    def sm_count(self) -> int:
        # nvmlDeviceGetNumGpuCores counts CUDA cores, not SMs.
        return int(self._call("read SM count", "nvmlDeviceGetAttributes").multiprocessorCount)

    def memory(self) -> MemoryInfo:
        info = self._call("read memory", "nvmlDeviceGetMemoryInfo")
        return MemoryInfo(total_bytes=int(info.total), used_bytes=int(info.used))

    def total_energy_mj(self) -> int:
        return int(self._call("read energy", "nvmlDeviceGetTotalEnergyConsumption"))

    def power_instant_mw(self) -> int:
        # nvmlDeviceGetPowerUsage is a 1 s average on Ampere and newer; the field is instantaneous.
        return int(self._first_supported("read instant power", self._field("NVML_FI_DEV_POWER_INSTANT"),
                                         self._bound("nvmlDeviceGetPowerUsage")))

    def power_average_mw(self) -> int:
        return int(self._first_supported("read average power", self._field("NVML_FI_DEV_POWER_AVERAGE"),
                                         self._bound("nvmlDeviceGetPowerUsage")))

    def sm_clock_mhz(self) -> int:
        return int(self._call("read SM clock", "nvmlDeviceGetClockInfo", _pynvml().NVML_CLOCK_SM))

    def memory_clock_mhz(self) -> int:
        return int(self._call("read memory clock", "nvmlDeviceGetClockInfo", _pynvml().NVML_CLOCK_MEM))

    def supported_memory_clocks_mhz(self) -> tuple[int, ...]:
        return _descending(self._call("read supported memory clocks", "nvmlDeviceGetSupportedMemoryClocks"))

    def supported_sm_clocks_mhz(self, memory_clock_mhz: int | None = None) -> tuple[int, ...]:
        # Default: the highest memory clock, the one a loaded GPU runs (an idle GDDR GPU reads a
        # low memory clock whose SM clock list is short).
        mem = max(self.supported_memory_clocks_mhz()) if memory_clock_mhz is None else memory_clock_mhz
        return _descending(self._call(f"read supported SM clocks at memory clock {mem} MHz",
                                      "nvmlDeviceGetSupportedGraphicsClocks", mem))

    def power_limit_mw(self) -> int:
        return int(self._call("read power limit", "nvmlDeviceGetEnforcedPowerLimit"))

    def power_limit_constraints_mw(self) -> tuple[int, int]:
        lo, hi = self._call("read power-limit constraints", "nvmlDeviceGetPowerManagementLimitConstraints")
        return int(lo), int(hi)

    def default_power_limit_mw(self) -> int:
        return int(self._call("read default power limit", "nvmlDeviceGetPowerManagementDefaultLimit"))

    def utilization(self) -> Utilization:
        rates = self._call("read utilization", "nvmlDeviceGetUtilizationRates")
        return Utilization(gpu_pct=int(rates.gpu), memory_pct=int(rates.memory))

    def temperature_c(self) -> int:
        # nvmlDeviceGetTemperature is deprecated (to go in CUDA 14); drivers before ~575 lack ...TemperatureV.
        sensor = _pynvml().NVML_TEMPERATURE_GPU
        return int(self._first_supported("read temperature", self._bound("nvmlDeviceGetTemperatureV", sensor),
                                         self._bound("nvmlDeviceGetTemperature", sensor)))

    def clock_events(self) -> tuple[str, ...]:
        # "Throttle reasons" were renamed "clock events" in driver 535; older drivers know only the old name.
        mask = self._first_supported("read clock events", self._bound("nvmlDeviceGetCurrentClocksEventReasons"),
                                     self._bound("nvmlDeviceGetCurrentClocksThrottleReasons"))
        return clock_event_names(int(mask))

    # writes
    def set_locked_sm_clocks_mhz(self, min_mhz: int, max_mhz: int) -> None:
        """Lock the SM clock; a range between supported steps locks the nearest ones
        (:meth:`snap_sm_clocks_mhz`), so that the booked lock is the one the driver applies."""
        if self._locked_sm_mhz == (min_mhz, max_mhz):
            return
        operation = f"set locked SM clocks {min_mhz}-{max_mhz} MHz"
        try:
            locked = self.snap_sm_clocks_mhz(min_mhz, max_mhz)
        except NotSupported:
            raise NotSupported(f"{self._label}: {operation}: NVML lists no supported SM clocks") from None
        except InvalidArgument as exc:
            raise InvalidArgument(f"{self._label}: {operation}: {exc}") from None
        if self._locked_sm_mhz == locked:
            return
        previous, self._locked_sm_mhz = self._locked_sm_mhz, locked
        try:  # booked first: a signal right after the write must still find the lock to undo
            self._call(operation, "nvmlDeviceSetGpuLockedClocks", *locked)
        except GpuError:
            self._locked_sm_mhz = previous  # not applied
            raise

    def reset_locked_sm_clocks(self) -> None:
        if self._locked_sm_mhz is None:
            return
        self._call("reset locked SM clocks", "nvmlDeviceResetGpuLockedClocks")
        self._locked_sm_mhz = None

    def _management_limit_mw(self) -> int:
        """The limit set through NVML (the enforced one may sit below it, under another cap)."""
        return int(self._call("read power management limit", "nvmlDeviceGetPowerManagementLimit"))

    def set_power_limit_mw(self, limit_mw: int) -> None:
        operation = f"set power limit {limit_mw} mW"
        lo, hi = self.power_limit_constraints_mw()
        if not lo <= limit_mw <= hi:
            raise InvalidArgument(f"{self._label}: {operation}: outside the allowed range {lo}-{hi} mW")
        current = self._management_limit_mw()
        if limit_mw == current:
            return
        booked = (self._original_power_limit_mw, self._power_limit_set_mw)
        if self._original_power_limit_mw is None:
            self._original_power_limit_mw = current
        self._power_limit_set_mw = limit_mw
        try:  # booked first, as for clocks
            self._call(operation, "nvmlDeviceSetPowerManagementLimit", limit_mw)
        except GpuError:
            self._original_power_limit_mw, self._power_limit_set_mw = booked
            raise

    def reset_power_limit(self) -> None:
        original = self._original_power_limit_mw
        if original is None:
            return
        if self._management_limit_mw() != original:
            self._call(f"restore power limit {original} mW", "nvmlDeviceSetPowerManagementLimit", original)
        self._original_power_limit_mw = self._power_limit_set_mw = None

    def changed(self) -> tuple[str, ...]:
        power_changed = self._power_limit_set_mw not in (None, self._original_power_limit_mw)
        return (("locked_sm_clocks",) if self._locked_sm_mhz else ()) + (("power_limit",) if power_changed else ())


# --- the process: init, visible devices ----------------------------------------------------------------

_init_lock = threading.Lock()
_initialised = False


def init() -> None:
    """Initialise NVML for this process; a no-op until :func:`shutdown`."""
    global _initialised
    with _init_lock:
        if not _initialised:
            _call("NVML: initialise", "nvmlInit")
            _initialised = True


def shutdown() -> None:
    """Shut NVML down if :func:`init` started it; handles from before are invalid afterwards."""
    global _initialised
    with _init_lock:
        if _initialised:
            _call("NVML: shut down", "nvmlShutdown")
            _initialised = False


def _gpu_count() -> int:
    return int(_call("NVML: count GPUs", "nvmlDeviceGetCount"))


def _handle(physical_index: int) -> Any:
    return _call(f"NVML: open the GPU at physical index {physical_index}", "nvmlDeviceGetHandleByIndex",
                 physical_index)


def visible_devices() -> list[int | str]:
    """The GPUs CUDA exposes, in CUDA's order, as ``CUDA_VISIBLE_DEVICES`` writes them.

    Physical indices and UUIDs (``GPU-...``, possibly a prefix); every physical index when the variable is
    unset. As in CUDA, the list ends at the first entry that is neither, so "" and "-1" mean no GPU
    (MIG instances, ``MIG-...``, end it too: festgym does not drive them).
    """
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        init()
        return list(range(_gpu_count()))
    entries: list[int | str] = []
    for entry in (part.strip() for part in value.split(",")):
        if entry.isascii() and entry.isdigit():
            entries.append(int(entry))
        elif _UUID_ENTRY.fullmatch(entry):
            entries.append(entry)
        else:
            break
    return entries


def _uuid_index(prefix: str, uuids: Sequence[str]) -> int | None:
    """The physical index of the one GPU whose UUID starts with ``prefix`` (None: none or several)."""
    matches = [i for i, uuid in enumerate(uuids) if uuid.lower().startswith(prefix.lower())]
    return matches[0] if len(matches) == 1 else None


def _physical_indices(entries: Sequence[int | str]) -> list[int]:
    """NVML's indices for ``entries``, ending (as CUDA does) at an entry that names no GPU."""
    count = _gpu_count()
    uuids = [_text(_call(f"NVML: read the UUID of physical GPU {i}", "nvmlDeviceGetUUID", _handle(i)))
             for i in range(count)] if any(isinstance(entry, str) for entry in entries) else []
    physical: list[int] = []
    for entry in entries:
        index = entry if isinstance(entry, int) else _uuid_index(entry, uuids)
        # A repeat ends the list too: one GPU must not become two festgym GPUs whose writes would fight.
        if index is None or index >= count or index in physical:
            break
        physical.append(index)
    return physical


def open_gpus(indices: Sequence[int] | None = None) -> list[NvmlDevice]:
    """The GPUs festgym numbers ``indices`` (default: every visible one), initialising NVML if needed."""
    init()
    physical = _physical_indices(visible_devices())
    wanted = range(len(physical)) if indices is None else indices
    for index in wanted:
        if not 0 <= index < len(physical):
            cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
            raise GpuNotFound(f"GPU {index}: not found: {len(physical)} GPU(s) visible "
                              f"(CUDA_VISIBLE_DEVICES={'unset' if cvd is None else repr(cvd)}; festgym's GPU i "
                              "is the i-th visible one)")
    return [NvmlDevice(index, physical[index], _handle(physical[index])) for index in wanted]


__all__ = [
    "MISSING_BINDING",
    "NO_DRIVER_HINT",
    "PRIVILEGE_HINT",
    "NvmlDevice",
    "init",
    "nvml_errors",
    "open_gpus",
    "shutdown",
    "translate",
    "visible_devices",
]
