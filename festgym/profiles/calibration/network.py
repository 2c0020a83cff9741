"""Fit the collective-time model (:mod:`festgym.profiles.collectives`) on vidur's NCCL measurements.

``python -m festgym.profiles.calibration.network [DATA_DIR]`` prints, as YAML, the
``collectives`` section of every shipped node spec (``nodes/*.yaml``): the fitted coefficients,
the fit errors, and the transfers to nodes without measurements, each with its source or
assumption. Reads ``vidur-network/{h100_dgx,a100_dgx}/*.csv`` (columns
``time_stats.<op>.median`` in ms, ``size`` in bytes, ``num_workers``, ``devices_per_node``) and
keeps the rows inside one node (``num_workers == devices_per_node``).

The engine's own all-reduce (``custom_all_reduce``) is fitted the same way on vLLM's custom
all-reduce timed on H100 (:data:`VLLM_CUSTOM_ALL_REDUCE_US`, published figures, not a data file).

Each worker count gets ``t = latency + size / bandwidth``, fitted by least absolute relative
error (iteratively reweighted least squares on ``predicted / measured - 1``, which is linear in
latency and 1/bandwidth): the fit minimises the MAPE it reports. Coefficients are rounded to
four significant digits before their errors are computed, so the recorded errors are those of
the shipped numbers.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from festgym.config import read_mapping
from festgym.errors import DataMissingError, FestgymError
from festgym.profiles.calibration.sources import Comparison, read_csv
from festgym.profiles.collectives import AlphaBeta
from festgym.profiles.specs import spec_path
from festgym.resources import data_dir as default_data_dir

WORKERS = (2, 4, 8)
"""Worker counts written to the node specs (those vidur measured inside a node)."""
IRLS_ROUNDS = 100
IRLS_FLOOR = 1e-3
"""Relative errors below this weigh as this much in the reweighting (keeps the weights finite)."""

MEASURED = {"dgx-h100": "h100_dgx", "dgx-a100": "a100_dgx"}
"""Node spec -> vidur-network folder measured on it."""
ALL_TO_ALL_BASIS = ("dgx-h100", "send_recv")
"""Where the all-to-all coefficients come from: the one point-to-point table (H100's)."""
TRANSFERRED = {"dgx-h200": "dgx-h100", "dgx-b200": "dgx-h100"}
"""Node specs without measurements -> the measured node their coefficients are scaled from."""

VLLM_CUSTOM_ALL_REDUCE_SOURCE = ("vLLM's custom all-reduce on 8 × H100 SXM, timed by SGLang's unit test without "
                                 "CUDA graphs: https://github.com/sgl-project/sglang/pull/2904 (the 'vllm' table)")
VLLM_CUSTOM_ALL_REDUCE_US = {
    "size_bytes": (512, 4096, 32768, 262144, 524288, 1048576),
    2: (9.5, 8.8, 8.7, 12.9, 17.7, 26.6),
    4: (9.1, 8.5, 9.2, 20.6, 26.9, 40.2),
    8: (10.1, 9.3, 11.8, 24.1, 30.4, 45.0),
}
"""Latency (µs) of vLLM's one-shot/two-shot all-reduce over NVLink peer memory per message size and
worker count (:data:`VLLM_CUSTOM_ALL_REDUCE_SOURCE`). vLLM dispatches an all-reduce to it below its
buffer size and to NCCL above; festgym takes the faster of the two at each size."""
CUSTOM_NOTE = ("fitted to {source}: t = latency + size/busbw per worker count, 512 B-1 MB, least absolute relative "
               "error. Timed outside CUDA graphs, so in a captured decode step it is likely a few µs faster: band "
               "latency 0.5-1x")

ALL_REDUCE_NOTE = ("fitted to {file} (NCCL all-reduce medians inside one node, num_workers = devices_per_node, "
                   "2 KB-64 MB): t = latency + size/busbw per worker count, least absolute relative error")
ALL_TO_ALL_NOTE = ("assumption: among k workers each sends (k-1)/k of its buffer over its own NVLink, all at once: "
                   "t = latency + (k-1)/k·size/bw, i.e. busbw = bw·k/(k-1), with latency {latency_us:g} µs and bw "
                   "{busbw_gbps:g} GB/s the alpha-beta fit of {file} (2 GPUs of one node). NCCL's all-to-all posts "
                   "k-1 concurrent sends, which can add latency and lose some bandwidth. Band: latency 1-3x, "
                   "busbw 0.7-1x")
SAME_NOTE = ("transferred from {base}: the same NVLink generation and NVSwitch fabric ({nvlink:g} GB/s per GPU "
             "each way in both node specs' nvlink_gbps)")
SCALED_NOTE = ("{kind} from {base}: latency kept, bandwidth scaled by the NVLink bandwidth per GPU, "
               "{nvlink:g}/{base_nvlink:g} GB/s (nvlink_gbps of the two node specs){band}")


def intra_node(data_dir: Path, folder: str, op: str) -> tuple[str, dict[int, tuple[np.ndarray, np.ndarray]]]:
    """``(file, {workers: (size_bytes, median_s)})`` of one vidur-network table, rows inside one node."""
    file = f"vidur-network/{folder}/{op}.csv"
    frame = read_csv(data_dir, file)
    frame = frame[frame.num_workers == frame.devices_per_node].sort_values("size")
    column = f"time_stats.{op}.median"
    return file, {int(k): (g["size"].to_numpy(dtype=float), g[column].to_numpy(dtype=float) * 1e-3)
                  for k, g in frame.groupby("num_workers")}


def fit_alpha_beta(size_bytes: np.ndarray, time_s: np.ndarray, where: str) -> AlphaBeta:
    """The alpha-beta coefficients of least absolute relative error, rounded to 4 digits."""
    design = np.column_stack([1.0 / time_s, size_bytes / time_s])  # (latency, s per byte) -> predicted/measured
    weights = np.ones_like(time_s)
    for _ in range(IRLS_ROUNDS):
        root = np.sqrt(weights)
        coef = np.linalg.lstsq(design * root[:, None], root, rcond=None)[0]
        weights = 1.0 / np.maximum(np.abs(design @ coef - 1.0), IRLS_FLOOR)
    latency_s, per_byte = coef
    if latency_s < 0 or per_byte <= 0:
        raise FestgymError(f"{where}: the alpha-beta fit is unphysical (latency {latency_s:g} s, "
                           f"{per_byte:g} s/byte)")
    return AlphaBeta(_digits(latency_s * 1e6), _digits(1e-9 / per_byte))


def comparison(ab: AlphaBeta, file: str, op: str, workers: int,
               size_bytes: np.ndarray, time_s: np.ndarray) -> Comparison:
    """Measured against predicted times (ms) of one op at one worker count."""
    labels = tuple(f"workers={workers} size={int(s)}" for s in size_bytes)
    return Comparison("vidur-network", file, f"{op}_ms", labels, time_s * 1e3, ab.time_s(size_bytes) * 1e3)


def fit_table(data_dir: Path, folder: str, op: str) -> tuple[str, dict[int, AlphaBeta], list[dict]]:
    """``(file, coefficients per worker count, fit errors)`` of one measured table."""
    file, rows = intra_node(data_dir, folder, op)
    table = {k: fit_alpha_beta(s, t, f"{file} workers={k}") for k, (s, t) in rows.items()}
    errors = [{"workers": k, **comparison(table[k], file, op, k, s, t).summary()} for k, (s, t) in rows.items()]
    return file, table, errors


def custom_all_reduce() -> tuple[dict[int, AlphaBeta], list[dict]]:
    """Coefficients and fit errors of the engine's own all-reduce on H100 (vLLM's custom all-reduce)."""
    sizes = np.asarray(VLLM_CUSTOM_ALL_REDUCE_US["size_bytes"], dtype=float)
    table, errors = {}, []
    for k in WORKERS:
        time_s = np.asarray(VLLM_CUSTOM_ALL_REDUCE_US[k], dtype=float) * 1e-6
        table[k] = fit_alpha_beta(sizes, time_s, f"vLLM custom all-reduce workers={k}")
        labels = tuple(f"workers={k} size={int(s)}" for s in sizes)
        errors.append({"workers": k, **Comparison("sglang-pr-2904", "sgl-project/sglang#2904", "custom_all_reduce_ms",
                                                  labels, time_s * 1e3, table[k].time_s(sizes) * 1e3).summary()})
    return table, errors


def all_to_all(send_recv: AlphaBeta, workers: Sequence[int] = WORKERS) -> dict[int, AlphaBeta]:
    """All-to-all among k workers from a point-to-point fit: each sends (k-1)/k of its buffer."""
    return {k: AlphaBeta(send_recv.latency_us, _digits(send_recv.busbw_gbps * k / (k - 1))) for k in workers}


def scaled(table: Mapping[int, AlphaBeta], factor: float) -> dict[int, AlphaBeta]:
    return {k: AlphaBeta(ab.latency_us, _digits(ab.busbw_gbps * factor)) for k, ab in table.items()}


def node_sections(data_dir: Path) -> dict[str, dict[str, Any]]:
    """The ``collectives`` section of every shipped node spec, by node name."""
    nvlink = {name: float(read_mapping(spec_path(name, "node"))["nvlink_gbps"])
              for name in (*MEASURED, *TRANSFERRED)}
    base, op = ALL_TO_ALL_BASIS
    sr_file, sr_table, sr_errors = fit_table(data_dir, MEASURED[base], op)
    a2a = all_to_all(sr_table[2])
    a2a_note = ALL_TO_ALL_NOTE.format(file=sr_file, **sr_table[2].to_dict())
    custom, custom_errors = custom_all_reduce()
    custom_note = CUSTOM_NOTE.format(source=VLLM_CUSTOM_ALL_REDUCE_SOURCE)
    sections: dict[str, dict[str, Any]] = {}
    for name, folder in MEASURED.items():
        file, table, errors = fit_table(data_dir, folder, "all_reduce")
        own_a2a = scaled(a2a, nvlink[name] / nvlink[base])
        note = a2a_note if name == base else SCALED_NOTE.format(
            kind="assumption: all_to_all transferred", base=base, nvlink=nvlink[name], base_nvlink=nvlink[base],
            band=". Band: busbw 0.6-0.8x of dgx-h100's")
        own_custom = scaled(custom, nvlink[name] / nvlink[base])
        custom_own_note = custom_note if name == base else SCALED_NOTE.format(
            kind="assumption: custom_all_reduce transferred", base=base, nvlink=nvlink[name],
            base_nvlink=nvlink[base], band=f". Band: latency 0.5-1.5x of {base}'s")
        sections[name] = _section(table, own_a2a, own_custom, {
            "all_reduce": ALL_REDUCE_NOTE.format(file=file), "all_to_all": note, "custom_all_reduce": custom_own_note,
            "fit": errors + (sr_errors + custom_errors if name == base else [])})
    for name, source in TRANSFERRED.items():
        factor = nvlink[name] / nvlink[source]
        measured = sections[source]
        note = SAME_NOTE.format(base=source, nvlink=nvlink[name]) if factor == 1 else SCALED_NOTE.format(
            kind="assumption: transferred", base=source, nvlink=nvlink[name], base_nvlink=nvlink[source],
            band=f". Band: busbw 1.5-2x of {source}'s (NVLink5's doubled links may not double NCCL's rate)")
        own = {op: scaled(_parsed(measured[op]), factor) for op in ("all_reduce", "all_to_all", "custom_all_reduce")}
        sections[name] = _section(own["all_reduce"], own["all_to_all"], own["custom_all_reduce"],
                                  {"all_reduce": note, **{op: f"{note}; {source}'s: {measured['provenance'][op]}"
                                                          for op in ("all_to_all", "custom_all_reduce")}})
    return sections


def _section(all_reduce: Mapping[int, AlphaBeta], all_to_all_: Mapping[int, AlphaBeta],
             custom: Mapping[int, AlphaBeta], provenance: Mapping[str, Any]) -> dict[str, Any]:
    tables = {"all_reduce": all_reduce, "all_to_all": all_to_all_, "custom_all_reduce": custom}
    return {**{op: {k: ab.to_dict() for k, ab in sorted(t.items())} for op, t in tables.items()},
            "provenance": dict(provenance)}


def _parsed(table: Mapping[int, Mapping[str, float]]) -> dict[int, AlphaBeta]:
    return {k: AlphaBeta(**v) for k, v in table.items()}


def _digits(value: float) -> float:
    return float(f"{value:.4g}")


def main(argv: Sequence[str] | None = None) -> int:
    """Print the node specs' ``collectives`` sections as YAML; the argument, if any, is the data folder."""
    import yaml

    args = list(sys.argv[1:] if argv is None else argv)
    data = Path(args[0]) if args else default_data_dir()
    if data is None:
        raise DataMissingError("reference data not found: put it at ../shared/data, set FESTGYM_DATA, "
                               "or pass the folder")
    sections = {name: {"collectives": section} for name, section in node_sections(data).items()}
    print(yaml.safe_dump(sections, sort_keys=False, width=110, allow_unicode=True), end="")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except FestgymError as exc:  # a missing data folder is a message, not a traceback
        print(f"festgym: error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
