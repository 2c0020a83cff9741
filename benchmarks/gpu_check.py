"""Prepared GPU check: the spec's idle powers, engine start and decode figures, measured on a lent GPU.

It changes no setting of the GPU (no clock lock, power limit, MIG or compute mode: NVML is only
read) and keeps to a time budget (``--budget``, default 480 s, which shortens the windows if
needed). In order:

1. **Empty GPU**: the NVML energy counter over a window before this process makes a CUDA context
   (torch is not even imported yet), and whether another process holds the GPU (then "empty" is
   not empty).
2. **Engine start** of a random-weight engine of a shipped model (the profiler's
   :class:`~festgym.profiles.profiler.transformer.RandomTransformer`): CUDA context, weights drawn
   on the GPU, a warm-up forward of a vLLM-sized prefill, decode CUDA-graph capture at vLLM's
   capture batch sizes, the KV cache. Context, warm-up, capture and KV cache are "engine init",
   what ``init_s`` models (a model's ``engine.init_s``, else the scenario's ``sim.init_s``:
   everything after the weights are on the GPU); the mean power meanwhile is set beside
   ``states.loading_w``.
3. **Resident idle**: weights and KV cache resident, nothing running; power and SM clock.
4. **Decode** step time (CUDA events, median) and power (energy counter over a window ≥ 1 s) per
   batch size at the clock the GPU runs (:func:`festgym.profiles.profiler.measure.measure`).

The table sets each figure beside the GPU spec's (the nearest shipped spec where festgym has none
for this GPU) and the shipped profile's decode predictions; ``--out`` writes every figure as JSON.
``--dry-run`` runs the same sequence on the CPU with a tiny model of the family and constant-power
meters in seconds (the tests do): it checks the script, not a GPU.

    PYTHONPATH=. python3 benchmarks/gpu_check.py --out gpu_check.json [--model Llama-3.1-8B] [--budget 300]
    python benchmarks/gpu_check.py --dry-run
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from festgym import signals
from festgym.cli.fields import add_fields, from_args, override
from festgym.config import check_ranges
from festgym.devices.device import GpuDevice, GpuError
from festgym.errors import FestgymError
from festgym.profiles.profiler.plan import Plan, ProfileRun
from festgym.profiles.specs import GpuSpec, gpu_type_of
from festgym.sim.config import SimConfig
from festgym.sim.serving import EngineConfig

if TYPE_CHECKING:  # torch is imported only once the empty GPU is measured (and never for --help)
    from festgym.devices.nvml import NvmlDevice
    from festgym.profiles.profiler.measure import Device, EnergyMeter
    from festgym.profiles.profiler.transformer import RandomTransformer

T = TypeVar("T")

NEAREST_SPEC = "H100-SXM-80GB"
"""The spec compared against where festgym ships none for the GPU (an H200, say), and in a dry run."""
DRY_POWER_W = {"empty": 70.0, "init": 150.0, "resident": 116.0, "decode": 300.0}
"""The dry run's constant-power meters, by phase: stand-ins that exercise the arithmetic, not readings."""
SETUP_S = 90.0
"""Budget kept for what is not a window: torch import, CUDA context, weights, warm-up, graph captures."""
POINT_S = 3.0
"""Budget per decode batch beside its energy window: KV cache, graph capture, warm-up and timed steps."""
MIN_IDLE_WINDOW_S = 2.0
MIN_DECODE_WINDOW_S = 1.0
"""Shortest windows a budget may leave (NVML's energy counter advances every few tens of ms)."""
CLOCK_SAMPLE_S = 0.5
"""How often an idle window reads the SM clock."""


def vllm_capture_sizes(max_num_seqs: int) -> tuple[int, ...]:
    """vLLM's default decode CUDA-graph batch sizes: 1, 2, 4, multiples of 8 below 256, then of 16,
    up to min(2 × max_num_seqs, 512)."""
    top = min(2 * max_num_seqs, 512)
    return tuple(b for b in (1, 2, 4, *range(8, 256, 8), *range(256, top + 1, 16)) if b <= top)


# --- options ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CheckRun:
    """What the check runs on and where it writes (one option per field)."""

    model: str = "Llama-3.1-8B"
    """A shipped model's name (its config under the profile folders) or a Hugging Face config.json."""
    gpu: int = 0
    """GPU index after CUDA_VISIBLE_DEVICES."""
    out: Path | None = None
    """JSON file for every figure (default: the table only)."""
    dry_run: bool = False
    """The whole check on the CPU with a tiny model of the family and constant-power meters (seconds)."""

    def profile_run(self) -> ProfileRun:
        """The profiler's run of this model and GPU, for its model and device setup (it writes nothing)."""
        return ProfileRun(model_config=Path(self.model), out=Path(), gpu=self.gpu, dry_run=self.dry_run)


@dataclass(frozen=True)
class CheckPlan:
    """What the check measures (one option per field; a tiny plan with --dry-run)."""

    batches: tuple[int, ...] = (1, 8, 32, 128)
    """Decode batch sizes measured."""
    ctx: int = 1024
    """Context of every decode sequence, tokens."""
    capture_batches: tuple[int, ...] = vllm_capture_sizes(EngineConfig().max_num_seqs)
    """Batch sizes whose decode CUDA graph the engine start captures (vLLM's list for the default max_num_seqs)."""
    capture_ctx: int = 16
    """Context of the KV cache each capture runs on (vLLM captures on short dummy sequences)."""
    warmup_tokens: int = EngineConfig().max_num_batched_tokens
    """Tokens of the start's warm-up forward (vLLM's profiling run of max_num_batched_tokens)."""
    settle_s: float = 5.0
    """Wait before each idle window, s, so that the GPU leaves the state of the last work (its clocks
    stay up for a while after kernels end)."""
    empty_window_s: float = 20.0
    """Energy window of the empty GPU, s."""
    resident_window_s: float = 20.0
    """Energy window of the resident idle engine, s."""
    decode_window_s: float = 2.0
    """Shortest energy window of each decode batch, s."""
    warmup: int = 3
    """Untimed decode steps per batch."""
    repeats: int = 20
    """Timed decode steps per batch (their median is the step time)."""
    budget_s: float = 480.0
    """Time the whole check may take, s: windows are shortened to fit and decode batches left out past it."""

    def __post_init__(self) -> None:
        check_ranges(self, {"batches": bool(self.batches) and min(self.batches) >= 1, "ctx": self.ctx >= 1,
                            "capture_batches": all(b >= 1 for b in self.capture_batches),
                            "capture_ctx": self.capture_ctx >= 1, "warmup_tokens": self.warmup_tokens >= 1,
                            "settle_s": self.settle_s >= 0,
                            "empty_window_s": self.empty_window_s > 0, "resident_window_s": self.resident_window_s > 0,
                            "decode_window_s": self.decode_window_s > 0, "warmup": self.warmup >= 0,
                            "repeats": self.repeats >= 1, "budget_s": self.budget_s > 0},
                     {"batches": "one or more sizes ≥ 1", "ctx": "≥ 1", "capture_batches": "sizes ≥ 1",
                      "capture_ctx": "≥ 1", "warmup_tokens": "≥ 1", "settle_s": "≥ 0 s", "empty_window_s": "> 0 s",
                      "resident_window_s": "> 0 s", "decode_window_s": "> 0 s", "warmup": "≥ 0", "repeats": "≥ 1",
                      "budget_s": "> 0 s"})

    @classmethod
    def dry(cls) -> CheckPlan:
        """A plan that runs in a couple of seconds on a CPU with the tiny model."""
        return cls(batches=(1, 4), ctx=64, capture_batches=(1, 2, 4), warmup_tokens=32, settle_s=0.0,
                   empty_window_s=0.05, resident_window_s=0.05, decode_window_s=0.05, warmup=1, repeats=3)

    def fitted(self) -> CheckPlan:
        """This plan with its windows shortened, in proportion above their floors, so that it fits
        ``budget_s`` with :data:`SETUP_S`, the settling and :data:`POINT_S` per batch kept for the rest."""
        n = len(self.batches)
        room = self.budget_s - SETUP_S - 2 * self.settle_s - n * POINT_S
        windows = (self.empty_window_s, self.resident_window_s, self.decode_window_s)
        counts = (1, 1, n)
        floors = tuple(min(w, f) for w, f in zip(windows, (MIN_IDLE_WINDOW_S, MIN_IDLE_WINDOW_S, MIN_DECODE_WINDOW_S)))
        total, least = (sum(c * w for c, w in zip(counts, values)) for values in (windows, floors))
        if total <= room:
            return self
        if room < least:
            raise FestgymError(f"--budget {self.budget_s:g} s is too short for {n} decode batches: give at least "
                               f"{self.budget_s - room + least:.0f} s, or fewer --batches")
        scale = (room - least) / (total - least)
        empty, resident, decode = (f + (w - f) * scale for w, f in zip(windows, floors))
        return replace(self, empty_window_s=empty, resident_window_s=resident, decode_window_s=decode)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add_fields(parser, CheckRun)
    add_fields(parser.add_argument_group("what to measure (default: the GPU plan; a tiny one with --dry-run)"),
               CheckPlan, overridable=True)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> tuple[CheckRun, CheckPlan]:
    """The run and the plan (the dry plan under the options given, with --dry-run)."""
    cli = parser()
    args = cli.parse_args(argv)
    try:
        run = from_args(CheckRun, args)
        return run, override(CheckPlan.dry() if run.dry_run else CheckPlan(), args)
    except FestgymError as exc:
        cli.error(str(exc))


# --- results -----------------------------------------------------------------------------------------

@dataclass
class Host:
    """The machine as NVML and torch describe it (read only)."""

    gpu: str = "cpu (dry run: no GPU)"
    uuid: str | None = None
    driver: str | None = None
    torch: str | None = None
    cuda: str | None = None
    dtype: str | None = None
    memory_total_gb: float | None = None
    power_limit_w: float | None = None
    default_power_limit_w: float | None = None
    max_sm_clock_mhz: int | None = None
    """The highest SM clock NVML lists."""
    memory_clock_mhz: int | None = None
    temperature_c: int | None = None
    """Before the check."""
    other_processes: list[dict] | None = None
    """Compute processes on the GPU before this one made its context (None: not listed). A
    container may not see other containers' processes: memory already used is the other hint."""


@dataclass
class Window:
    """An idle window: the energy counter's mean power, and the GPU's state meanwhile."""

    power_w: float
    window_s: float
    sm_clock_mhz: float | None = None
    """Median of the SM clock reads (an idle GPU reads a low clock whatever its ceiling)."""
    nvml_average_power_w: float | None = None
    """The driver's own ~1 s power average at the window's end (a cross-check of the counter)."""
    memory_used_gb: float | None = None


@dataclass
class EngineStart:
    """The random-weight engine's start, by step (s), and its mean power."""

    context_s: float | None = None
    weights_s: float | None = None
    weights_gb: float | None = None
    warmup_s: float | None = None
    graphs: int = 0
    graph_capture_s: float | None = None
    kv_cache_s: float | None = None
    kv_cache_gb: float | None = None
    init_s: float | None = None
    """Context + warm-up + graph capture + KV cache: the start after the weights are on the GPU."""
    power_w: float | None = None
    """Mean over the whole start, weights included (the energy counter)."""


@dataclass
class DecodePoint:
    """One decode batch: measured step time and power, and the profile's prediction."""

    batch: int
    ctx: int
    time_s: float | None = None
    time_p10_s: float | None = None
    time_p90_s: float | None = None
    power_w: float | None = None
    window_s: float | None = None
    clock_mhz: float | None = None
    clock_events: str | None = None
    predicted_time_s: float | None = None
    predicted_power_w: float | None = None
    skipped: str | None = None

    @classmethod
    def from_row(cls, row: dict) -> DecodePoint:
        """From a row of :func:`festgym.profiles.profiler.measure.measure`."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in row.items() if k in names})


@dataclass
class SpecFigures:
    """The figures the measurements are set beside."""

    gpu_type: str
    label: str
    """Whose spec this is: the GPU's own, or the nearest shipped one."""
    empty_w: float
    resident_w: float
    """At the spec's default clock."""
    loading_w: float
    default_sm_clock_mhz: int
    init_s: float
    init_source: str
    resident_at_clock_w: float | None = None
    """``resident_idle_w`` at the clock decode ran at: the clock ceiling the GPU runs under."""
    resident_clock_mhz: float | None = None
    profile: str | None = None
    """The profile whose decode predictions are shown."""
    profile_note: str | None = None
    """Why there are none."""


@dataclass
class CheckReport:
    """Everything the check found; filled as it goes, so that an interrupted check still reports."""

    run: CheckRun
    plan: CheckPlan
    spec: SpecFigures | None = None
    host: Host = field(default_factory=Host)
    empty: Window | None = None
    start: EngineStart | None = None
    resident: Window | None = None
    decode: list[DecodePoint] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    aborted: str | None = None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, default=str)


# --- the spec's figures ------------------------------------------------------------------------------

def spec_for(gpu_name: str | None) -> tuple[GpuSpec, str]:
    """The shipped spec of a GPU NVML names ``gpu_name`` (None: the dry run's CPU), else the
    nearest one, and a label saying which."""
    if gpu_name is None:
        return GpuSpec.load(NEAREST_SPEC), "reference spec of the dry run (CPU figures are not comparable)"
    found = gpu_type_of(gpu_name)
    if found is not None:
        return GpuSpec.load(found), "this GPU's shipped spec"
    return GpuSpec.load(NEAREST_SPEC), f"nearest shipped spec (festgym ships none for {gpu_name})"


def init_figure() -> tuple[float, str]:
    """The engine-init figure to compare with, and where it comes from: the scenarios' default
    ``sim.init_s`` (a model's ``engine.init_s`` may override it)."""
    return SimConfig().init_s, "SimConfig.init_s"


def spec_figures(spec: GpuSpec, label: str) -> SpecFigures:
    init_s, source = init_figure()
    st = spec.states
    return SpecFigures(gpu_type=spec.name, label=label, empty_w=st.empty_w, resident_w=st.resident_w,
                       loading_w=st.loading_w, default_sm_clock_mhz=spec.default_sm_clock_mhz, init_s=init_s,
                       init_source=source)


def compare(report: CheckReport, spec: GpuSpec, model: str) -> None:
    """Fill in the spec's resident idle power at the running clock and the profile's decode predictions."""
    figures = report.spec
    if figures is None:
        return
    clocks = [p.clock_mhz for p in report.decode if p.clock_mhz is not None]
    figures.resident_clock_mhz = statistics.median(clocks) if clocks else float(spec.default_sm_clock_mhz)
    figures.resident_at_clock_w = spec.resident_idle_w(figures.resident_clock_mhz)
    from festgym.profiles.profile import load_profile  # pandas: only once there is something to compare

    key = f"{spec.name}/{model}"
    try:
        profile = load_profile(key)
    except FestgymError as exc:
        figures.profile_note = f"no predictions: {exc}"
        return
    figures.profile = key
    for point in report.decode:
        if point.time_s is not None:
            out = profile.decode(point.batch, point.ctx, 1.0, point.clock_mhz)
            point.predicted_time_s, point.predicted_power_w = float(out["time_s"]), float(out["power_w"])


# --- NVML reads ----------------------------------------------------------------------------------------

def _maybe(read: Callable[[], T]) -> T | None:
    """A reading, or None where the GPU or driver does not give it."""
    try:
        return read()
    except GpuError:
        return None


def open_gpu(run: CheckRun) -> NvmlDevice | None:
    """NVML's view of the GPU (None in a dry run): NVML only, no CUDA context."""
    if run.dry_run:
        return None
    from festgym.devices.nvml import open_gpus

    return open_gpus([run.gpu])[0]


def _nvml_system(gpu: GpuDevice, operation: str, function: str, *args: Any) -> Any:
    """A pynvml call the device interface has no reader for (driver version, processes); a missing
    binding is :class:`~festgym.devices.device.NvmlUnavailable`, as for the device's own reads."""
    from festgym.devices.nvml import nvml_errors

    with nvml_errors(f"{gpu.name()}: {operation}"):
        import pynvml

        return getattr(pynvml, function)(*args)


def other_processes(gpu: GpuDevice) -> list[dict] | None:
    """The compute processes NVML lists on the GPU (pid, MiB used), or None if it cannot list them."""
    try:
        handle = _nvml_system(gpu, "open by UUID", "nvmlDeviceGetHandleByUUID", gpu.uuid())
        processes = _nvml_system(gpu, "list compute processes", "nvmlDeviceGetComputeRunningProcesses", handle)
    except GpuError:
        return None
    known = [getattr(p, "usedGpuMemory", None) for p in processes]
    return [{"pid": int(p.pid), "used_mib": used // 2**20 if isinstance(used, int) and used < 2**62 else None}
            for p, used in zip(processes, known)]


def read_host(gpu: GpuDevice) -> Host:
    driver = _maybe(lambda: _nvml_system(gpu, "read driver version", "nvmlSystemGetDriverVersion"))
    memory = _maybe(gpu.memory)
    clocks = _maybe(gpu.supported_sm_clocks_mhz)
    limit, default = _maybe(gpu.power_limit_mw), _maybe(gpu.default_power_limit_mw)
    return Host(gpu=gpu.name(), uuid=_maybe(gpu.uuid),
                driver=driver.decode() if isinstance(driver, bytes) else driver,
                memory_total_gb=memory.total_bytes / 1e9 if memory else None,
                power_limit_w=limit / 1e3 if limit is not None else None,
                default_power_limit_w=default / 1e3 if default is not None else None,
                max_sm_clock_mhz=max(clocks) if clocks else None, memory_clock_mhz=_maybe(gpu.memory_clock_mhz),
                temperature_c=_maybe(gpu.temperature_c), other_processes=other_processes(gpu))


def host_notes(host: Host, empty: Window | None) -> list[str]:
    """What makes the GPU's figures other than a clean, default GPU's."""
    notes = []
    if host.other_processes:
        notes.append(f"{len(host.other_processes)} other compute process(es) on the GPU "
                     f"({host.other_processes}): the empty-GPU power is not an empty GPU's")
    elif host.other_processes is None and host.uuid is not None:
        notes.append("NVML could not list the GPU's processes: the GPU may not have been empty")
    if empty is not None and empty.memory_used_gb is not None and empty.memory_used_gb > 1.0:
        notes.append(f"{empty.memory_used_gb:.1f} GB of GPU memory was in use before this process's context")
    if host.power_limit_w is not None and host.default_power_limit_w not in (None, host.power_limit_w):
        notes.append(f"power limit {host.power_limit_w:g} W, not the default {host.default_power_limit_w:g} W")
    return notes


# --- measuring -----------------------------------------------------------------------------------------

def energy_reader(gpu: GpuDevice | None, phase: str) -> Callable[[], int]:
    """The energy counter, mJ: the GPU's (NVML, no torch), or the dry run's constant-power meter."""
    if gpu is not None:
        return gpu.total_energy_mj
    from festgym.profiles.profiler.measure import ConstantPower

    return ConstantPower(DRY_POWER_W[phase]).energy_mj


def idle_window(energy_mj: Callable[[], int], window_s: float, gpu: GpuDevice | None) -> Window:
    """Mean power over ``window_s`` of doing nothing, reading the SM clock every :data:`CLOCK_SAMPLE_S`."""
    clocks = []
    e0, t0 = energy_mj(), time.perf_counter()
    end = t0 + window_s
    while (left := end - time.perf_counter()) > 0:
        time.sleep(min(CLOCK_SAMPLE_S, left))
        if gpu is not None:
            clocks.append(gpu.sm_clock_mhz())
    e1, t1 = energy_mj(), time.perf_counter()
    average = _maybe(gpu.power_average_mw) if gpu is not None else None
    memory = _maybe(gpu.memory) if gpu is not None else None
    return Window(power_w=(e1 - e0) / 1e3 / (t1 - t0), window_s=t1 - t0,
                  sm_clock_mhz=statistics.median(clocks) if clocks else None,
                  nvml_average_power_w=average / 1e3 if average is not None else None,
                  memory_used_gb=memory.used_bytes / 1e9 if memory else None)


def timed(device: Device, work: Callable[[], T]) -> tuple[T, float]:
    """``work()`` and its seconds, the device synchronised before and after (queued kernels count)."""
    device.sync()
    t0 = time.perf_counter()
    out = work()
    device.sync()
    return out, time.perf_counter() - t0


def capture_graphs(model: RandomTransformer, device: Device, plan: CheckPlan) -> tuple[int, float]:
    """Capture a decode graph per capture batch size, each on a KV cache of ``capture_ctx``, as an
    engine's start does: (graphs captured, seconds). The graphs are dropped: each replays only on
    its own cache, which the next allocation frees."""
    from festgym.profiles.profiler.measure import kv_bytes

    graphs, seconds = 0, 0.0
    for batch in plan.capture_batches:
        if kv_bytes(model, batch, plan.capture_ctx) > 0.9 * device.free_bytes():
            continue
        model.allocate_cache(batch, plan.capture_ctx)  # a dummy cache, untimed: the KV pool is timed after
        _, took = timed(device, model.decode_step)
        graphs, seconds = graphs + 1, seconds + took
    model.cache = None
    return graphs, seconds


@contextmanager
def started_engine(run: CheckRun, plan: CheckPlan, report: CheckReport,
                   energy_mj: Callable[[], int]) -> Iterator[tuple[Device, RandomTransformer, EnergyMeter]]:
    """The engine started (:class:`EngineStart` filled in step by step): the device, the model with
    its KV cache resident and the device's energy meter. Its memory is given back on the way out."""
    import torch

    from festgym.profiles.profiler.measure import ConstantPower, kv_bytes
    from festgym.profiles.profiler.run import _config, _device
    from festgym.profiles.profiler.transformer import DTYPES, RandomTransformer

    _, spec = _config(run.profile_run())  # the dry run's is the tiny model of the family
    start = report.start = EngineStart()
    e0, t0 = energy_mj(), time.perf_counter()
    device, meter = _device(run.profile_run())  # torch's first CUDA call: the context; checks torch's GPU is NVML's
    torch.zeros(1, device=device.torch)
    device.sync()
    start.context_s = time.perf_counter() - t0
    dtype = DTYPES.get(spec.dtype, torch.bfloat16) if device.cuda else torch.float32  # as the profiler runs it
    report.host.torch, report.host.cuda = torch.__version__, torch.version.cuda
    report.host.dtype = str(dtype).removeprefix("torch.")
    model = None
    try:
        model, start.weights_s = timed(device, lambda: RandomTransformer(spec, device.torch, dtype))
        start.weights_gb = sum(t.numel() * t.element_size() for t in model.tensors()) / 1e9
        _, start.warmup_s = timed(device, lambda: model.prefill(1, plan.warmup_tokens))
        start.graphs, start.graph_capture_s = capture_graphs(model, device, plan)
        batch = max(plan.batches)
        _, start.kv_cache_s = timed(device, lambda: model.allocate_cache(batch, plan.ctx))
        start.kv_cache_gb = kv_bytes(model, batch, plan.ctx) / 1e9
        start.init_s = start.context_s + start.warmup_s + start.graph_capture_s + start.kv_cache_s
        start.power_w = (energy_mj() - e0) / 1e3 / (time.perf_counter() - t0)
        yield device, model, meter if meter is not None else ConstantPower(DRY_POWER_W["decode"])
    finally:
        if model is not None:
            model.cache = None  # the bulk; the weights go with the last reference to the model
        device.release()


def measure_decode(model: RandomTransformer, device: Device, meter: EnergyMeter, plan: CheckPlan, sm_count: int,
                   deadline: float, report: CheckReport) -> None:
    """Each decode batch at ``ctx`` on the whole GPU at its running clock, until the budget is spent."""
    from festgym.profiles.profiler.measure import measure

    model.cache = None  # the resident window's KV cache: each batch allocates its own
    device.release()
    for batch in plan.batches:
        if time.perf_counter() + plan.decode_window_s + POINT_S > deadline:
            report.decode.append(DecodePoint(batch, plan.ctx, skipped="time budget spent"))
            continue
        point = Plan(tokens=(), batches=(batch,), ctxs=(plan.ctx,), warmup=plan.warmup, repeats=plan.repeats,
                     min_window_s=plan.decode_window_s)
        (row,) = measure(model, device, point, meter, sm_count, progress)
        report.decode.append(DecodePoint.from_row(row))


def progress(line: str) -> None:
    print(f"  {line}", file=sys.stderr, flush=True)


def check(run: CheckRun, plan: CheckPlan, report: CheckReport) -> None:
    """The whole sequence, filling ``report`` as it goes; NVML is shut down at the end, also on failure."""
    deadline = time.perf_counter() + plan.budget_s
    report.plan = plan = plan.fitted()
    gpu = open_gpu(run)
    try:
        spec, label = spec_for(gpu.name() if gpu is not None else None)
        report.spec = spec_figures(spec, label)
        if gpu is not None:
            report.host = read_host(gpu)
        progress(f"empty GPU: {plan.empty_window_s:.1f} s window")
        time.sleep(plan.settle_s)
        report.empty = idle_window(energy_reader(gpu, "empty"), plan.empty_window_s, gpu)
        report.notes += host_notes(report.host, report.empty)
        progress(f"engine start: {run.model}")
        with started_engine(run, plan, report, energy_reader(gpu, "init")) as (device, model, meter):
            progress(f"resident idle: {plan.resident_window_s:.1f} s window")
            time.sleep(plan.settle_s)
            report.resident = idle_window(energy_reader(gpu, "resident"), plan.resident_window_s, gpu)
            sm_count = gpu.sm_count() if gpu is not None else spec.sm_count
            measure_decode(model, device, meter, plan, sm_count, deadline, report)
        compare(report, spec, run.model)
    finally:
        if gpu is not None:
            from festgym.devices import nvml

            nvml.shutdown()


# --- the report --------------------------------------------------------------------------------------

def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ms(seconds: float | None) -> str:
    return _f(None if seconds is None else seconds * 1e3, 2)


def _ratio(measured: float | None, predicted: float | None) -> str:
    return "-" if measured is None or not predicted else f"{measured / predicted:.2f}"


def _window_note(window: Window | None) -> str:
    if window is None:
        return "not measured"
    clock = f", SM {window.sm_clock_mhz:.0f} MHz" if window.sm_clock_mhz is not None else ""
    nvml = f", NVML average {window.nvml_average_power_w:.1f} W" if window.nvml_average_power_w is not None else ""
    return f"{window.window_s:.2f} s window{clock}{nvml}"


def _start_rows(start: EngineStart | None, spec: SpecFigures | None) -> list[tuple[str, str, str, str]]:
    if start is None:
        return [("engine init, s", "-", _f(spec.init_s if spec else None, 2), "not measured")]
    steps = (f"context {_f(start.context_s, 2)} + warm-up {_f(start.warmup_s, 2)} + {start.graphs} graphs "
             f"{_f(start.graph_capture_s, 2)} + KV cache {_f(start.kv_cache_gb)} GB {_f(start.kv_cache_s, 2)}")
    return [("engine init, s", _f(start.init_s, 2), _f(spec.init_s if spec else None, 2),
             f"{steps}; spec: {spec.init_source if spec else '-'}"),
            ("engine start power, W", _f(start.power_w), _f(spec.loading_w if spec else None), "states.loading_w"),
            ("weights (random, drawn on the GPU), s", _f(start.weights_s, 2), "-",
             f"{_f(start.weights_gb)} GB, no host copy (not in engine init)")]


def _summary_rows(report: CheckReport) -> list[tuple[str, str, str, str]]:
    spec = report.spec
    resident_spec = spec.resident_at_clock_w if spec and spec.resident_at_clock_w is not None else \
        spec.resident_w if spec else None
    clock_note = f"; spec at {spec.resident_clock_mhz:.0f} MHz" if spec and spec.resident_clock_mhz else ""
    return [("empty GPU power, W", _f(report.empty.power_w if report.empty else None),
             _f(spec.empty_w if spec else None), _window_note(report.empty)),
            ("resident idle power, W", _f(report.resident.power_w if report.resident else None), _f(resident_spec),
             _window_note(report.resident) + clock_note),
            *_start_rows(report.start, spec)]


def _decode_rows(points: list[DecodePoint]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for p in points:
        if p.skipped is not None:
            rows.append((str(p.batch), f"skipped: {p.skipped}"))
            continue
        spread = f"{_ms(p.time_p10_s)}-{_ms(p.time_p90_s)}"
        rows.append((str(p.batch), _ms(p.time_s), spread, _ms(p.predicted_time_s), _ratio(p.time_s, p.predicted_time_s),
                     _f(p.power_w), _f(p.predicted_power_w), _ratio(p.power_w, p.predicted_power_w),
                     _f(p.clock_mhz, 0), p.clock_events or "-"))
    return rows


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in (header, *rows) if i < len(r)) for i in range(len(header))]
    return ["  ".join(cell.ljust(w) if i in (0, len(header) - 1) else cell.rjust(w)
                      for i, (cell, w) in enumerate(zip(row, widths))).rstrip() for row in (header, *rows)]


def format_report(report: CheckReport) -> str:
    """The table the check prints: each figure beside the spec's and the profile's."""
    host, spec, plan = report.host, report.spec, report.plan
    lines = [f"festgym GPU check: {host.gpu}" + (f", driver {host.driver}" if host.driver else "")
             + (f", torch {host.torch}" if host.torch else "") + (f" (CUDA {host.cuda})" if host.cuda else ""),
             f"model {report.run.model} ({host.dtype or '?'}, random weights); took {report.elapsed_s:.1f} s "
             f"of a {plan.budget_s:g} s budget" + (" [dry run: CPU, constant-power meters]" if report.run.dry_run
                                                    else "")]
    if spec is not None:
        lines.append(f"spec: {spec.gpu_type}, {spec.label}")
    if report.aborted:
        lines.append(f"ABORTED: {report.aborted} (figures below are those measured before)")
    lines += ["", *_table(("figure", "measured", "spec", "how"), _summary_rows(report)), ""]
    lines += _table((f"decode, ctx {plan.ctx}: batch", "step ms", "p10-p90", "profile ms", "ratio", "power W",
                     "profile W", "ratio", "SM MHz", "clock events"), _decode_rows(report.decode))
    if spec is not None and spec.profile:
        lines.append(f"profile: {spec.profile} at share 1 and the SM clock read under load (or the spec's default)")
    if spec is not None and spec.profile_note:
        lines.append(spec.profile_note)
    lines += [f"note: {note}" for note in report.notes]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the check; print the table (and write --out) also when it fails or is interrupted:
    0 done, 1 a festgym error, 130 interrupted."""
    run, plan = parse_args(argv)
    report = CheckReport(run=run, plan=plan)
    began, code = time.perf_counter(), 0
    try:
        with signals.raising_on(lambda signum: KeyboardInterrupt()):  # any terminating signal unwinds as Ctrl-C
            check(run, plan, report)
    except KeyboardInterrupt:
        report.aborted, code = "interrupted", 130
    except FestgymError as exc:
        report.aborted, code = str(exc), 1
    finally:
        report.elapsed_s = time.perf_counter() - began
        print(format_report(report), flush=True)
        if run.out is not None:
            run.out.parent.mkdir(parents=True, exist_ok=True)
            run.out.write_text(report.to_json() + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
