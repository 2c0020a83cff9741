"""What rule policies remember of the traffic: moving means of prompt size and arrival rate.

Placement sees each request; a GPU's control runs once per interval. :class:`Demand` gathers
both: a moving mean of prompt tokens per model (updated per request, weight 0.1) and, per
(GPU, model), the requests placed since that GPU's last control, folded into a moving mean of
arrivals per second at the control (weight 0.3). Policies use them to size the prefill a
control interval will bring.
"""

from __future__ import annotations

CTX_GUESS = 1024.0
"""Tokens assumed where nothing is known yet: the context of an instance with nothing decoding,
and a model's prompt before its first request (about a typical chat prompt)."""


class Demand:
    """Moving means of prompt tokens per model and of arrivals per (GPU, model)."""

    def __init__(self) -> None:
        self._prompt: dict[str, float] = {}
        self._placed: dict[tuple[int, str], int] = {}  # requests placed since the GPU's last control
        self._rate: dict[tuple[int, str], float] = {}

    def arrived(self, model: str, prompt_tokens: int) -> None:
        mean = self._prompt.get(model)
        self._prompt[model] = prompt_tokens if mean is None else 0.9 * mean + 0.1 * prompt_tokens

    def placed(self, gpu: int | None, model: str) -> int | None:
        """Count a request placed on ``gpu`` (``None``: rejected); returns ``gpu``."""
        if gpu is not None:
            key = (gpu, model)
            self._placed[key] = self._placed.get(key, 0) + 1
        return gpu

    def tick(self, gpu: int, model: str, interval_s: float) -> None:
        """At ``gpu``'s control: fold the placements since the last one into the rate."""
        key = (gpu, model)
        self._rate[key] = 0.7 * self._rate.get(key, 0.0) + 0.3 * self._placed.pop(key, 0) / interval_s

    def prompt(self, model: str) -> float:
        """Moving-mean prompt tokens of ``model`` (``CTX_GUESS`` before its first request)."""
        return self._prompt.get(model, CTX_GUESS)

    def rate(self, gpu: int, model: str) -> float:
        """Moving-mean arrivals per second of ``model`` on ``gpu``."""
        return self._rate.get((gpu, model), 0.0)
