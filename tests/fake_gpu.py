"""A fixed GPU for deploy tests that must not touch the simulator (the numpy-only import test)."""

from __future__ import annotations

from festgym.devices.device import GpuDevice, MemoryInfo, Utilization


class FakeGpu(GpuDevice):
    """An idle H100-like GPU whose energy counter grows 100 J per reading; writes are recorded."""

    index = 0

    def __init__(self) -> None:
        self.energy_mj = 0
        self.writes: list[tuple] = []
        self.locked: tuple[int, int] | None = None

    def name(self) -> str:
        return "Fake H100"

    def uuid(self) -> str:
        return "GPU-fake"

    def sm_count(self) -> int:
        return 132

    def memory(self) -> MemoryInfo:
        return MemoryInfo(80 * 2**30, 60 * 2**30)

    def total_energy_mj(self) -> int:
        self.energy_mj += 100_000
        return self.energy_mj

    def power_instant_mw(self) -> int:
        return 100_000

    power_average_mw = power_instant_mw

    def sm_clock_mhz(self) -> int:
        return self.locked[1] if self.locked else 1980

    def memory_clock_mhz(self) -> int:
        return 2619

    def supported_memory_clocks_mhz(self) -> tuple[int, ...]:
        return (2619,)

    def supported_sm_clocks_mhz(self, memory_clock_mhz: int | None = None) -> tuple[int, ...]:
        return tuple(range(1980, 209, -15))

    def power_limit_mw(self) -> int:
        return 700_000

    def power_limit_constraints_mw(self) -> tuple[int, int]:
        return 200_000, 700_000

    def default_power_limit_mw(self) -> int:
        return 700_000

    def utilization(self) -> Utilization:
        return Utilization(0, 0)

    def temperature_c(self) -> int:
        return 40

    def clock_events(self) -> tuple[str, ...]:
        return ("gpu_idle",)

    def set_locked_sm_clocks_mhz(self, min_mhz: int, max_mhz: int) -> None:
        self.writes.append(("lock", min_mhz, max_mhz))
        self.locked = (min_mhz, max_mhz)

    def reset_locked_sm_clocks(self) -> None:
        self.writes.append(("reset",))
        self.locked = None

    def set_power_limit_mw(self, limit_mw: int) -> None:
        self.writes.append(("limit", limit_mw))

    def reset_power_limit(self) -> None:
        self.writes.append(("reset_limit",))

    def changed(self) -> tuple[str, ...]:
        return ("locked_sm_clocks",) if self.locked else ()


def serve_metrics(text: bytes | None = None) -> str:
    """A live Prometheus endpoint on localhost (a daemon thread) serving ``text`` (default: a vLLM
    engine of Llama-3.1-8B with 5 requests running); its URL."""
    import http.server
    import threading

    from festgym.deploy.engine_metrics import render_metrics

    body = text if text is not None else render_metrics(
        "vllm", "Llama-3.1-8B", {"running": 5, "waiting": 0}, {"prompt_tokens": 100.0}, {}).encode()

    class Metrics(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Metrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}"
