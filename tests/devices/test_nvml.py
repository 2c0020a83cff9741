"""festgym.devices.nvml against a patched pynvml: four H100s, every NVML function autospec'd to the real binding."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from types import SimpleNamespace
from typing import Any
from unittest.mock import patch

import pynvml
import pytest

from festgym.devices import nvml
from festgym.devices.device import (
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
)

NAME = "NVIDIA H100 80GB HBM3"
UUIDS = ["GPU-aaaa1111-0000-0000-0000-000000000000", "GPU-aaaa2222-0000-0000-0000-000000000000",
         "GPU-bbbb3333-0000-0000-0000-000000000000", "GPU-cccc4444-0000-0000-0000-000000000000"]
SM_CLOCKS = [1980, 1965, 1200, 345, 210]  # NVML's order, descending
POWER_FIELDS = {pynvml.NVML_FI_DEV_POWER_INSTANT: 512_345, pynvml.NVML_FI_DEV_POWER_AVERAGE: 498_000}


def field_values(handle: str, field_ids: list[int], status: int = pynvml.NVML_SUCCESS) -> Any:
    """What nvmlDeviceGetFieldValues returns: a ctypes array of c_nvmlFieldValue_t."""
    values = (pynvml.c_nvmlFieldValue_t * len(field_ids))()
    for value, field_id in zip(values, field_ids):
        value.fieldId, value.nvmlReturn = field_id, status
        value.valueType = pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
        value.value.uiVal = POWER_FIELDS[field_id]
    return values


RETURNS: dict[str, Any] = {
    "nvmlInit": None, "nvmlShutdown": None,
    "nvmlDeviceGetCount": len(UUIDS),
    "nvmlDeviceGetHandleByIndex": lambda index: f"h{index}",
    "nvmlDeviceGetName": lambda handle: NAME,
    "nvmlDeviceGetUUID": lambda handle: UUIDS[int(handle[1:])],
    "nvmlDeviceGetAttributes": pynvml.c_nvmlDeviceAttributes(multiprocessorCount=132),
    "nvmlDeviceGetMemoryInfo": pynvml.c_nvmlMemory_t(total=80 * 2**30, free=70 * 2**30, used=10 * 2**30),
    "nvmlDeviceGetTotalEnergyConsumption": 123_456_789,
    "nvmlDeviceGetFieldValues": field_values,
    "nvmlDeviceGetPowerUsage": 450_000,
    "nvmlDeviceGetClockInfo": lambda handle, kind: {pynvml.NVML_CLOCK_SM: 1755, pynvml.NVML_CLOCK_MEM: 2619}[kind],
    "nvmlDeviceGetSupportedMemoryClocks": [1593, 2619],
    "nvmlDeviceGetSupportedGraphicsClocks": SM_CLOCKS,
    "nvmlDeviceGetEnforcedPowerLimit": 700_000,
    "nvmlDeviceGetPowerManagementLimit": 700_000,
    "nvmlDeviceGetPowerManagementLimitConstraints": [200_000, 700_000],
    "nvmlDeviceGetPowerManagementDefaultLimit": 700_000,
    "nvmlDeviceGetUtilizationRates": pynvml.c_nvmlUtilization_t(gpu=87, memory=40),
    "nvmlDeviceGetTemperatureV": 54,
    "nvmlDeviceGetTemperature": 55,
    "nvmlDeviceGetCurrentClocksEventReasons": 0x4 | 0x1000,
    "nvmlDeviceGetCurrentClocksThrottleReasons": 0x40,
    "nvmlDeviceSetGpuLockedClocks": None, "nvmlDeviceResetGpuLockedClocks": None,
    "nvmlDeviceSetPowerManagementLimit": None,
}


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Every pynvml function the module calls, autospec'd, answering for a machine with four H100s."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(nvml, "_initialised", False)
    with ExitStack() as stack:
        mocks = {name: stack.enter_context(patch.object(pynvml, name, autospec=True)) for name in RETURNS}
        for name, answer in RETURNS.items():
            if callable(answer):
                mocks[name].side_effect = answer
            else:
                mocks[name].return_value = answer
        yield SimpleNamespace(**mocks)


@pytest.fixture
def gpu(fake: Any) -> nvml.NvmlDevice:
    (device,) = nvml.open_gpus([0])
    return device


def error(name: str) -> Exception:
    return pynvml.NVMLError(getattr(pynvml, name))


@contextmanager
def without(*names: str) -> Iterator[None]:
    """An older binding, lacking ``names``. Not monkeypatch.delattr: its undo would outlive the fixture's mocks."""
    saved = {name: getattr(pynvml, name) for name in names}
    for name in names:
        delattr(pynvml, name)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(pynvml, name, value)


# --- reads ------------------------------------------------------------------------------------------

READS = [  # method, args, NVML function, its extra arguments after the handle, expected
    ("uuid", (), "nvmlDeviceGetUUID", (), UUIDS[0]),
    ("sm_count", (), "nvmlDeviceGetAttributes", (), 132),
    ("memory", (), "nvmlDeviceGetMemoryInfo", (), MemoryInfo(total_bytes=80 * 2**30, used_bytes=10 * 2**30)),
    ("total_energy_mj", (), "nvmlDeviceGetTotalEnergyConsumption", (), 123_456_789),
    ("power_instant_mw", (), "nvmlDeviceGetFieldValues", ([pynvml.NVML_FI_DEV_POWER_INSTANT],), 512_345),
    ("power_average_mw", (), "nvmlDeviceGetFieldValues", ([pynvml.NVML_FI_DEV_POWER_AVERAGE],), 498_000),
    ("sm_clock_mhz", (), "nvmlDeviceGetClockInfo", (pynvml.NVML_CLOCK_SM,), 1755),
    ("memory_clock_mhz", (), "nvmlDeviceGetClockInfo", (pynvml.NVML_CLOCK_MEM,), 2619),
    ("supported_memory_clocks_mhz", (), "nvmlDeviceGetSupportedMemoryClocks", (), (2619, 1593)),
    ("supported_sm_clocks_mhz", (1593,), "nvmlDeviceGetSupportedGraphicsClocks", (1593,), tuple(SM_CLOCKS)),
    ("power_limit_mw", (), "nvmlDeviceGetEnforcedPowerLimit", (), 700_000),
    ("power_limit_constraints_mw", (), "nvmlDeviceGetPowerManagementLimitConstraints", (), (200_000, 700_000)),
    ("default_power_limit_mw", (), "nvmlDeviceGetPowerManagementDefaultLimit", (), 700_000),
    ("utilization", (), "nvmlDeviceGetUtilizationRates", (), Utilization(gpu_pct=87, memory_pct=40)),
    ("temperature_c", (), "nvmlDeviceGetTemperatureV", (pynvml.NVML_TEMPERATURE_GPU,), 54),
    ("clock_events", (), "nvmlDeviceGetCurrentClocksEventReasons", (), ("sw_power_cap", "0x1000")),
]


@pytest.mark.parametrize("method, args, function, nvml_args, expected", READS, ids=[r[0] for r in READS])
def test_read(gpu: nvml.NvmlDevice, fake: Any, method: str, args: tuple, function: str, nvml_args: tuple,
              expected: Any) -> None:
    assert getattr(gpu, method)(*args) == expected
    getattr(fake, function).assert_called_once_with("h0", *nvml_args)


@pytest.mark.parametrize("method, args, function, nvml_args, expected", READS, ids=[r[0] for r in READS])
def test_read_error_names_gpu_and_operation(gpu: nvml.NvmlDevice, fake: Any, method: str, args: tuple, function: str,
                                            nvml_args: tuple, expected: Any) -> None:
    getattr(fake, function).side_effect = error("NVML_ERROR_UNKNOWN")
    with pytest.raises(GpuError, match=rf"^GPU 0 \({NAME}\): read [^:]+: Unknown Error$") as info:
        getattr(gpu, method)(*args)
    assert type(info.value) is GpuError
    assert isinstance(info.value.__cause__, pynvml.NVMLError)


def test_name_is_read_once_and_bytes_are_decoded(fake: Any) -> None:
    fake.nvmlDeviceGetName.side_effect = None
    fake.nvmlDeviceGetName.return_value = NAME.encode()
    fake.nvmlDeviceGetUUID.side_effect = None
    fake.nvmlDeviceGetUUID.return_value = UUIDS[0].encode()
    (gpu,) = nvml.open_gpus([0])
    assert (gpu.name(), gpu.name(), gpu.uuid()) == (NAME, NAME, UUIDS[0])
    fake.nvmlDeviceGetName.assert_called_once_with("h0")


def test_supported_sm_clocks_default_to_the_highest_memory_clock(gpu: nvml.NvmlDevice, fake: Any) -> None:
    fake.nvmlDeviceGetClockInfo.side_effect = None
    fake.nvmlDeviceGetClockInfo.return_value = 405  # an idle GPU's low memory clock: not the one that matters
    fake.nvmlDeviceGetSupportedGraphicsClocks.return_value = [210, 1980, 1200]  # sorted whatever NVML's order
    assert gpu.supported_sm_clocks_mhz() == (1980, 1200, 210)
    fake.nvmlDeviceGetSupportedGraphicsClocks.assert_called_once_with("h0", 2619)


def test_read_and_info_use_the_nvml_readings(gpu: nvml.NvmlDevice) -> None:
    assert gpu.read() == GpuReading(energy_mj=123_456_789, power_mw=512_345, sm_clock_mhz=1755,
                                    memory=MemoryInfo(80 * 2**30, 10 * 2**30), power_limit_mw=700_000,
                                    temperature_c=54, utilization=Utilization(87, 40),
                                    clock_events=("sw_power_cap", "0x1000"))
    row = gpu.info()
    assert (row["name"], row["sm_count"], row["sm_clocks_mhz"], row["power_limit_range_w"]) == \
        (NAME, 132, "210-1980 (5)", "200-700")


# --- fallbacks ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("method, field", [("power_instant_mw", "NVML_FI_DEV_POWER_INSTANT"),
                                           ("power_average_mw", "NVML_FI_DEV_POWER_AVERAGE")])
def test_power_falls_back_when_the_field_is_not_supported(gpu: nvml.NvmlDevice, fake: Any, method: str,
                                                          field: str) -> None:
    fake.nvmlDeviceGetFieldValues.side_effect = lambda handle, ids: field_values(
        handle, ids, status=pynvml.NVML_ERROR_NOT_SUPPORTED)
    assert getattr(gpu, method)() == 450_000
    fake.nvmlDeviceGetFieldValues.assert_called_once_with("h0", [getattr(pynvml, field)])
    fake.nvmlDeviceGetPowerUsage.assert_called_once_with("h0")


def test_power_falls_back_on_an_old_driver(gpu: nvml.NvmlDevice, fake: Any) -> None:
    fake.nvmlDeviceGetFieldValues.side_effect = error("NVML_ERROR_FUNCTION_NOT_FOUND")
    assert gpu.power_instant_mw() == 450_000


def test_power_falls_back_on_an_old_binding(gpu: nvml.NvmlDevice, fake: Any) -> None:
    with without("NVML_FI_DEV_POWER_INSTANT"):
        assert gpu.power_instant_mw() == 450_000
    fake.nvmlDeviceGetFieldValues.assert_not_called()


def test_power_does_not_fall_back_on_a_lost_gpu(gpu: nvml.NvmlDevice, fake: Any) -> None:
    fake.nvmlDeviceGetFieldValues.side_effect = lambda handle, ids: field_values(
        handle, ids, status=pynvml.NVML_ERROR_GPU_IS_LOST)
    with pytest.raises(GpuLost, match="read instant power: GPU is lost"):
        gpu.power_instant_mw()
    fake.nvmlDeviceGetPowerUsage.assert_not_called()


def test_the_last_fallbacks_error_is_reported(gpu: nvml.NvmlDevice, fake: Any) -> None:
    fake.nvmlDeviceGetFieldValues.side_effect = error("NVML_ERROR_NOT_SUPPORTED")
    fake.nvmlDeviceGetPowerUsage.side_effect = error("NVML_ERROR_NO_PERMISSION")
    with pytest.raises(NoPermission, match=rf"GPU 0 \({NAME}\): read average power: Insufficient Permissions"):
        gpu.power_average_mw()


def test_temperature_falls_back_to_the_deprecated_call(gpu: nvml.NvmlDevice, fake: Any) -> None:
    fake.nvmlDeviceGetTemperatureV.side_effect = error("NVML_ERROR_FUNCTION_NOT_FOUND")
    assert gpu.temperature_c() == 55
    fake.nvmlDeviceGetTemperature.assert_called_once_with("h0", pynvml.NVML_TEMPERATURE_GPU)


@pytest.mark.parametrize("missing, expected", [("nvmlDeviceGetTemperatureV", 55), ("nvmlDeviceGetTemperature", 54)])
def test_temperature_uses_what_the_binding_has(gpu: nvml.NvmlDevice, missing: str, expected: int) -> None:
    with without(missing):
        assert gpu.temperature_c() == expected


def test_a_reading_no_binding_function_provides_is_not_supported(gpu: nvml.NvmlDevice) -> None:
    with without("nvmlDeviceGetTemperatureV", "nvmlDeviceGetTemperature"), \
            pytest.raises(NotSupported, match="read temperature: not provided by this nvidia-ml-py"):
        gpu.temperature_c()


def test_clock_events_fall_back_to_throttle_reasons(gpu: nvml.NvmlDevice, fake: Any) -> None:
    fake.nvmlDeviceGetCurrentClocksEventReasons.side_effect = error("NVML_ERROR_FUNCTION_NOT_FOUND")
    assert gpu.clock_events() == ("hw_thermal_slowdown",)
    with without("nvmlDeviceGetCurrentClocksEventReasons"):
        assert gpu.clock_events() == ("hw_thermal_slowdown",)
    assert fake.nvmlDeviceGetCurrentClocksThrottleReasons.call_count == 2


# --- writes ---------------------------------------------------------------------------------------------

def test_lock_sm_clocks_skips_repeats_and_resets_once(gpu: nvml.NvmlDevice, fake: Any) -> None:
    gpu.set_locked_sm_clocks_mhz(1200, 1965)
    gpu.set_locked_sm_clocks_mhz(1200, 1965)
    fake.nvmlDeviceSetGpuLockedClocks.assert_called_once_with("h0", 1200, 1965)
    assert gpu.changed() == ("locked_sm_clocks",)
    gpu.set_locked_sm_clocks_mhz(210, 1980)  # the range's ends are allowed
    assert fake.nvmlDeviceSetGpuLockedClocks.call_args_list[-1].args == ("h0", 210, 1980)
    gpu.reset_locked_sm_clocks()
    gpu.reset_locked_sm_clocks()
    fake.nvmlDeviceResetGpuLockedClocks.assert_called_once_with("h0")
    assert gpu.changed() == ()


def test_reset_without_a_lock_writes_nothing(gpu: nvml.NvmlDevice, fake: Any) -> None:
    gpu.reset_locked_sm_clocks()
    fake.nvmlDeviceResetGpuLockedClocks.assert_not_called()


@pytest.mark.parametrize("lo, hi, message", [
    (1500, 1200, "the minimum exceeds the maximum"),
    (200, 1200, "outside the supported SM clock range 210-1980 MHz"),
    (1200, 2000, "outside the supported SM clock range 210-1980 MHz"),
])
def test_lock_sm_clocks_validates_before_writing(gpu: nvml.NvmlDevice, fake: Any, lo: int, hi: int,
                                                 message: str) -> None:
    with pytest.raises(InvalidArgument, match=rf"^GPU 0 \({NAME}\): set locked SM clocks {lo}-{hi} MHz: {message}$"):
        gpu.set_locked_sm_clocks_mhz(lo, hi)
    fake.nvmlDeviceSetGpuLockedClocks.assert_not_called()
    assert gpu.changed() == ()


def test_lock_sm_clocks_needs_supported_clocks(gpu: nvml.NvmlDevice, fake: Any) -> None:
    fake.nvmlDeviceGetSupportedGraphicsClocks.return_value = []
    with pytest.raises(NotSupported, match="NVML lists no supported SM clocks"):
        gpu.set_locked_sm_clocks_mhz(1200, 1200)
    fake.nvmlDeviceSetGpuLockedClocks.assert_not_called()


def test_a_failed_lock_is_not_remembered(gpu: nvml.NvmlDevice, fake: Any) -> None:
    fake.nvmlDeviceSetGpuLockedClocks.side_effect = error("NVML_ERROR_NO_PERMISSION")
    with pytest.raises(NoPermission, match=rf"^GPU 0 \({NAME}\): set locked SM clocks 1200-1200 MHz: "
                                           "Insufficient Permissions; "):
        gpu.set_locked_sm_clocks_mhz(1200, 1200)
    assert gpu.changed() == ()


def test_power_limit_set_skip_and_reset(gpu: nvml.NvmlDevice, fake: Any) -> None:
    gpu.set_power_limit_mw(700_000)  # the enforced limit already
    fake.nvmlDeviceSetPowerManagementLimit.assert_not_called()
    assert gpu.changed() == ()
    gpu.set_power_limit_mw(500_000)
    fake.nvmlDeviceSetPowerManagementLimit.assert_called_once_with("h0", 500_000)
    assert gpu.changed() == ("power_limit",)
    fake.nvmlDeviceGetPowerManagementLimit.return_value = 500_000
    gpu.set_power_limit_mw(500_000)
    assert fake.nvmlDeviceSetPowerManagementLimit.call_count == 1
    gpu.reset_power_limit()
    assert fake.nvmlDeviceSetPowerManagementLimit.call_args_list[-1].args == ("h0", 700_000)
    assert gpu.changed() == ()


def test_setting_the_original_limit_back_is_no_change(gpu: nvml.NvmlDevice, fake: Any) -> None:
    fake.nvmlDeviceGetPowerManagementLimit.return_value = 600_000  # someone set 600 W before festgym
    gpu.set_power_limit_mw(400_000)
    fake.nvmlDeviceGetPowerManagementLimit.return_value = 400_000
    gpu.set_power_limit_mw(600_000)
    assert fake.nvmlDeviceSetPowerManagementLimit.call_args_list[-1].args == ("h0", 600_000)
    assert gpu.changed() == ()


def test_reset_power_limit_restores_the_operators_limit(gpu: nvml.NvmlDevice, fake: Any) -> None:
    fake.nvmlDeviceGetPowerManagementLimit.return_value = 300_000  # an operator's limit, not festgym's change
    gpu.reset_power_limit()
    fake.nvmlDeviceSetPowerManagementLimit.assert_not_called()
    gpu.set_power_limit_mw(500_000)
    fake.nvmlDeviceGetPowerManagementLimit.return_value = 500_000
    assert gpu.restore() == ("power_limit",)
    assert fake.nvmlDeviceSetPowerManagementLimit.call_args_list[-1].args == ("h0", 300_000)  # not the default
    assert gpu.changed() == ()


@pytest.mark.parametrize("limit", [199_999, 700_001])
def test_power_limit_validates_before_writing(gpu: nvml.NvmlDevice, fake: Any, limit: int) -> None:
    with pytest.raises(InvalidArgument, match=rf"set power limit {limit} mW: outside the allowed range "
                                              r"200000-700000 mW$"):
        gpu.set_power_limit_mw(limit)
    fake.nvmlDeviceSetPowerManagementLimit.assert_not_called()
    assert gpu.changed() == ()


def test_restore_undoes_both_changes_once(gpu: nvml.NvmlDevice, fake: Any) -> None:
    gpu.set_locked_sm_clocks_mhz(1200, 1200)
    gpu.set_power_limit_mw(400_000)
    fake.nvmlDeviceGetPowerManagementLimit.return_value = 400_000
    assert gpu.changed() == ("locked_sm_clocks", "power_limit")
    assert gpu.restore() == ("locked_sm_clocks", "power_limit")
    fake.nvmlDeviceResetGpuLockedClocks.assert_called_once_with("h0")
    assert fake.nvmlDeviceSetPowerManagementLimit.call_args_list[-1].args == ("h0", 700_000)
    fake.nvmlDeviceGetPowerManagementLimit.return_value = 700_000
    assert gpu.restore() == ()
    assert (fake.nvmlDeviceResetGpuLockedClocks.call_count, fake.nvmlDeviceSetPowerManagementLimit.call_count) == (1, 2)


def test_restore_uses_the_management_limit_not_the_enforced_one(gpu: nvml.NvmlDevice, fake: Any) -> None:
    fake.nvmlDeviceGetEnforcedPowerLimit.return_value = 450_000  # an out-of-band cap below the set limit
    gpu.set_power_limit_mw(500_000)
    fake.nvmlDeviceGetPowerManagementLimit.return_value = 500_000
    gpu.restore()
    assert fake.nvmlDeviceSetPowerManagementLimit.call_args_list[-1].args == ("h0", 700_000)  # not 450 W


def test_a_write_is_booked_before_it_is_made(gpu: nvml.NvmlDevice, fake: Any) -> None:
    """A signal raised as the NVML call returns must still find the change to undo."""
    class Signal(BaseException):
        pass

    fake.nvmlDeviceSetGpuLockedClocks.side_effect = Signal  # the write happened; then the signal
    with pytest.raises(Signal):
        gpu.set_locked_sm_clocks_mhz(1200, 1200)
    assert gpu.changed() == ("locked_sm_clocks",)
    fake.nvmlDeviceSetGpuLockedClocks.side_effect = error("NVML_ERROR_NO_PERMISSION")  # refused: nothing to undo
    gpu.restore()
    with pytest.raises(NoPermission):
        gpu.set_locked_sm_clocks_mhz(1200, 1200)
    assert gpu.changed() == ()


# --- error mapping ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("code, expected", [
    ("NVML_ERROR_NO_PERMISSION", NoPermission),
    ("NVML_ERROR_NOT_SUPPORTED", NotSupported),
    ("NVML_ERROR_INVALID_ARGUMENT", InvalidArgument),
    ("NVML_ERROR_NOT_FOUND", GpuNotFound),
    ("NVML_ERROR_GPU_NOT_FOUND", GpuNotFound),
    ("NVML_ERROR_GPU_IS_LOST", GpuLost),
    ("NVML_ERROR_RESET_REQUIRED", GpuLost),
    ("NVML_ERROR_LIBRARY_NOT_FOUND", NvmlUnavailable),
    ("NVML_ERROR_DRIVER_NOT_LOADED", NvmlUnavailable),
    ("NVML_ERROR_LIB_RM_VERSION_MISMATCH", NvmlUnavailable),
    ("NVML_ERROR_FUNCTION_NOT_FOUND", NvmlUnavailable),
    ("NVML_ERROR_UNINITIALIZED", NvmlUnavailable),
    ("NVML_ERROR_UNKNOWN", GpuError),
    ("NVML_ERROR_TIMEOUT", GpuError),
    ("NVML_ERROR_IN_USE", GpuError),
])
def test_nvml_errors_map_by_code(gpu: nvml.NvmlDevice, fake: Any, code: str, expected: type[GpuError]) -> None:
    nvml_error = error(code)
    fake.nvmlDeviceSetGpuLockedClocks.side_effect = nvml_error
    with pytest.raises(GpuError) as info:
        gpu.set_locked_sm_clocks_mhz(1200, 1200)
    assert type(info.value) is expected
    assert str(info.value).startswith(f"GPU 0 ({NAME}): set locked SM clocks 1200-1200 MHz: {nvml_error}")
    assert info.value.__cause__ is nvml_error


def test_no_permission_says_how_to_grant_it(gpu: nvml.NvmlDevice, fake: Any) -> None:
    fake.nvmlDeviceSetPowerManagementLimit.side_effect = error("NVML_ERROR_NO_PERMISSION")
    with pytest.raises(NoPermission) as info:
        gpu.set_power_limit_mw(500_000)
    message = str(info.value)
    assert message.startswith(f"GPU 0 ({NAME}): set power limit 500000 mW: Insufficient Permissions; ")
    for needed in ("root", "CAP_SYS_ADMIN", "sudo setcap cap_sys_admin+ep $(readlink -f $(which python3))",
                   'securityContext.capabilities.add: ["SYS_ADMIN"]', "privileged actuator", "--dry-run"):
        assert needed in message
    assert gpu.changed() == ()


def test_nvml_errors_context_manager_passes_other_exceptions(fake: Any) -> None:
    with pytest.raises(KeyError), nvml.nvml_errors("NVML: anything"):
        raise KeyError("not NVML's")


# --- init, the binding ------------------------------------------------------------------------------------

def test_init_once_and_shutdown(fake: Any) -> None:
    nvml.open_gpus()
    nvml.open_gpus([1])
    nvml.init()
    fake.nvmlInit.assert_called_once_with()
    nvml.shutdown()
    nvml.shutdown()
    fake.nvmlShutdown.assert_called_once_with()
    nvml.init()
    assert fake.nvmlInit.call_count == 2


@pytest.mark.parametrize("code", ["NVML_ERROR_LIBRARY_NOT_FOUND", "NVML_ERROR_DRIVER_NOT_LOADED"])
def test_init_without_a_driver(fake: Any, code: str) -> None:
    fake.nvmlInit.side_effect = error(code)
    with pytest.raises(NvmlUnavailable, match=r"^NVML: initialise: .*no NVIDIA driver was found.*"
                                              r"`festgym deploy --simulate` runs without a GPU"):
        nvml.open_gpus()
    fake.nvmlInit.side_effect = None
    nvml.init()  # a failed init is retried
    assert fake.nvmlInit.call_count == 2


def test_missing_binding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml now raises ImportError
    monkeypatch.setattr(nvml, "_initialised", False)
    for call in (nvml.init, nvml.open_gpus, nvml.visible_devices):
        with pytest.raises(NvmlUnavailable, match=r"pip install nvidia-ml-py \(or pip install festgym\[deploy\]\)"):
            call()
    monkeypatch.setattr(nvml, "_initialised", True)
    with pytest.raises(NvmlUnavailable, match="pip install nvidia-ml-py"):
        nvml.shutdown()


def test_module_imports_without_the_binding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    spec = importlib.util.find_spec("festgym.devices.nvml")
    assert spec is not None and spec.loader is not None
    fresh = importlib.util.module_from_spec(spec)  # a second copy: festgym.devices.nvml stays as it is
    spec.loader.exec_module(fresh)
    with pytest.raises(NvmlUnavailable, match="pip install nvidia-ml-py"):
        fresh.init()


# --- CUDA_VISIBLE_DEVICES -------------------------------------------------------------------------------

@pytest.mark.parametrize("value, visible, physical", [
    (None, [0, 1, 2, 3], [0, 1, 2, 3]),
    ("2,0", [2, 0], [2, 0]),
    (" 1 , 3", [1, 3], [1, 3]),
    ("", [], []),
    ("-1", [], []),
    ("NoDevFiles", [], []),
    ("1,-1,2", [1], [1]),
    ("0,7,1", [0, 7, 1], [0]),  # 7 names no GPU: CUDA stops there
    ("1,1,2", [1, 1, 2], [1]),
    (UUIDS[3], [UUIDS[3]], [3]),
    ("GPU-BBBB,1", ["GPU-BBBB", 1], [2, 1]),  # a unique prefix, any case
    ("GPU-aaaa,1", ["GPU-aaaa", 1], []),  # ambiguous prefix
    ("GPU-dddd", ["GPU-dddd"], []),
    ("MIG-aaaa1111,0", [], []),
])
def test_cuda_visible_devices(fake: Any, monkeypatch: pytest.MonkeyPatch, value: str | None, visible: list,
                              physical: list[int]) -> None:
    if value is not None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
    assert nvml.visible_devices() == visible
    gpus = nvml.open_gpus()
    assert [(g.index, g.physical_index, g.uuid()) for g in gpus] == [
        (i, p, UUIDS[p]) for i, p in enumerate(physical)]


def test_open_selected_logical_indices(fake: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    (gpu,) = nvml.open_gpus([1])
    assert (gpu.index, gpu.physical_index, gpu.uuid()) == (1, 3, UUIDS[3])
    assert repr(gpu) == f"NvmlDevice(index=1, physical_index=3, name='{NAME}')"


@pytest.mark.parametrize("value, index, message", [
    (None, 4, "GPU 4: not found: 4 GPU(s) visible (CUDA_VISIBLE_DEVICES=unset;"),
    ("0,1", 2, "GPU 2: not found: 2 GPU(s) visible (CUDA_VISIBLE_DEVICES='0,1';"),
    ("", 0, "GPU 0: not found: 0 GPU(s) visible (CUDA_VISIBLE_DEVICES='';"),
    (None, -1, "GPU -1: not found: 4 GPU(s) visible"),
])
def test_open_beyond_the_visible_gpus(fake: Any, monkeypatch: pytest.MonkeyPatch, value: str | None, index: int,
                                      message: str) -> None:
    if value is not None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
    with pytest.raises(GpuNotFound) as info:
        nvml.open_gpus([index])
    assert str(info.value).startswith(message)
    fake.nvmlDeviceGetHandleByIndex.assert_not_called()
