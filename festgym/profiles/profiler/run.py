"""``festgym profile``: build the model, measure it, write the profile (the pipeline).

``--cpu`` runs on the CPU without NVML; ``--dry-run`` is ``--cpu`` with a tiny model of the same
family and a small plan, so that the whole pipeline runs in seconds (tests do this). On the CPU
there is no energy counter: power stays modelled unless a meter is passed (tests pass a fake one).
A CPU "profile" tests the pipeline; it is not a GPU profile, and its provenance says so.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any

import torch

from festgym.config import read_mapping
from festgym.errors import FestgymError
from festgym.profiles.calibration.measured import (
    MEASUREMENTS,
    comparisons,
    with_predictions,
)
from festgym.profiles.models import ModelSpec, name_from_config
from festgym.profiles.profile import Profile
from festgym.profiles.profiler.assemble import assemble
from festgym.profiles.profiler.measure import (
    Device,
    DeviceEnergy,
    EnergyMeter,
    measure,
)
from festgym.profiles.profiler.plan import Plan, ProfileRun
from festgym.profiles.profiler.transformer import DTYPES, RandomTransformer
from festgym.profiles.specs import GpuSpec, gpu_type_of, spec_path

TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 512, "torch_dtype": "float32"}
"""The dry run's model: the config's family at toy size."""


def _config(run: ProfileRun) -> tuple[dict[str, Any], ModelSpec]:
    path = spec_path(run.model_config, "model")
    config = dict(read_mapping(path))
    name = name_from_config(config, run.name, path)
    if run.dry_run:
        config = {**config, **TINY}
        name = f"{name}-tiny"
    return config, ModelSpec.from_hf_config(config, name, path)


def gpu_spec_for(run: ProfileRun, gpu_name: str | None) -> GpuSpec:
    """``--gpu-spec``, else the shipped spec of the GPU's type (:func:`festgym.profiles.specs.gpu_type_of`;
    the CPU, ``gpu_name`` None, profiles against the H100 spec)."""
    if run.gpu_spec is not None:
        return GpuSpec.load(run.gpu_spec)
    folder = "H100-SXM-80GB" if gpu_name is None else gpu_type_of(gpu_name)
    if folder is None:
        raise FestgymError(f"no shipped GPU spec for {gpu_name!r}: pass --gpu-spec path/to/gpu.yaml")
    return GpuSpec.load(folder)


def _device(run: ProfileRun) -> tuple[Device, EnergyMeter | None]:
    if run.cpu or run.dry_run:
        return Device(torch.device("cpu")), None
    if not torch.cuda.is_available():
        raise FestgymError("torch sees no CUDA GPU (a CPU build of torch, or no driver): profile on a GPU host, "
                           "or pass --cpu / --dry-run to exercise the pipeline")
    from festgym.devices.nvml import open_gpus

    gpu = open_gpus([run.gpu])[0]
    cuda = torch.device("cuda", run.gpu)
    torch_uuid = str(getattr(torch.cuda.get_device_properties(cuda), "uuid", ""))
    if torch_uuid and torch_uuid not in gpu.uuid():  # torch orders GPUs fastest first, NVML by PCI bus
        raise FestgymError(f"torch's GPU {run.gpu} ({torch_uuid}) is not NVML's ({gpu.uuid()}): set "
                           "CUDA_DEVICE_ORDER=PCI_BUS_ID so that both number GPUs alike")
    return Device(cuda, gpu), DeviceEnergy(gpu)


def profile(run: ProfileRun, meter: EnergyMeter | None = None,
            progress: Callable[[str], None] = lambda _: None) -> Profile:
    """Measure and write the profile; ``meter`` overrides the device's energy meter (tests)."""
    config, spec = _config(run)
    device, device_meter = _device(run)
    meter = meter if meter is not None else device_meter
    gpu = gpu_spec_for(run, device.gpu.name() if device.gpu is not None else None)
    plan = run.plan or (Plan.tiny() if run.dry_run else Plan())
    if run.sweep_clocks and not plan.clocks_mhz:
        plan = replace(plan, clocks_mhz=tuple(int(c) for c in sweep_clocks(gpu)))
    dtype = DTYPES.get(spec.dtype, torch.bfloat16) if device.cuda else torch.float32  # CPU: fp32 kernels
    model = RandomTransformer(spec, device.torch, dtype)
    rows = measure(model, device, plan, meter, gpu.sm_count, progress)
    frame = with_predictions(rows, gpu, spec)
    measurement = {"device": device.gpu.name() if device.gpu is not None else "cpu (pipeline test, not a GPU "
                   "profile)", "uuid": device.gpu.uuid() if device.gpu is not None else None,
                   "torch": torch.__version__, "dtype": str(dtype).removeprefix("torch."),
                   "share_mechanism": device.share_mechanism(),
                   "clocks": "locked in turn" if plan.clocks_mhz else "as the GPU runs them",
                   "energy": "NVML total-energy counter" if isinstance(meter, DeviceEnergy) else
                             type(meter).__name__ if meter is not None else "not measured (power modelled)",
                   "power_limit_w": device.gpu.power_limit_mw() / 1e3 if device.gpu is not None else None,
                   "default_power_limit_w": device.gpu.default_power_limit_mw() / 1e3 if device.gpu is not None
                   else None,
                   "plan": asdict(plan), "skipped": int(frame["skipped"].notna().sum()), "dry_run": run.dry_run}
    measurement = json.loads(json.dumps(measurement, default=str))  # plain types for the YAML
    measured = assemble(frame, gpu, spec, measurement)
    measured = Profile(measured.gpu, measured.model, measured.prefill_grid, measured.decode_grid,
                       measured.provenance, tuple(comparisons(frame)))
    out = measured.save(run.out, config)
    frame.drop(columns=["sm_share", "sm_clock_mhz"], errors="ignore").to_csv(out / MEASUREMENTS, index=False,
                                                                             float_format="%.6g")
    return Profile.load(out)


def sweep_clocks(gpu: GpuSpec, n: int = 5):
    """``n`` clocks evenly over the control range (the levels controllers use)."""
    from festgym.control.levels import clock_levels

    return clock_levels(gpu.sm_clocks_mhz, n, gpu.name)


__all__ = ["TINY", "gpu_spec_for", "profile", "sweep_clocks"]
