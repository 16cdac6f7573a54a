"""Seeded fault injection: 5xx, 429, slow responses, connections dropped after the request is applied, and
202 `{"message":"queued"}` answers (the maintenance-window reply of the 2020 docs, braze-api.md §9.1, §14).

Each endpoint draws from its own `random.Random` seeded from (seed, endpoint), so the same seed gives the
same fault sequence per endpoint whatever the interleaving of other endpoints.
"""

from __future__ import annotations

import random
from typing import Literal

FaultMode = Literal["500", "502", "503", "504", "429", "slow", "drop", "202"]
MODES: tuple[str, ...] = ("500", "502", "503", "504", "429", "slow", "drop", "202")
# `fault_rate` spreads over these only: 202 is opt-in (`202=RATE`), so existing seeds keep their sequences.
SPREAD_MODES: tuple[str, ...] = MODES[:-1]
QUEUED_BODY = {"message": "queued"}
ERROR_MESSAGES = {
    "500": "Internal Server Error",
    "502": "Bad Gateway",
    "503": "Service Unavailable",
    "504": "Gateway Timeout",
    "429": "Rate Limited",
}


def parse_fault(text: str) -> tuple[str, float]:
    """Parse `MODE=RATE` or `ENDPOINT:MODE=RATE`; ValueError with a clear message otherwise."""
    key, sep, rate_s = text.partition("=")
    mode = key.rpartition(":")[2]
    try:
        rate = float(rate_s)
    except ValueError:
        rate = -1.0
    if not sep or mode not in MODES or not 0.0 <= rate <= 1.0:
        raise ValueError(
            f"--fault {text!r}: expected [ENDPOINT:]MODE=RATE, MODE one of {', '.join(MODES)}, RATE in 0..1"
        )
    return key, rate


class FaultInjector:
    """Decides, per request, whether to inject a fault and which one.

    `fault_rate` spreads that probability evenly over every mode but 202; `faults` maps `MODE` or
    `ENDPOINT:MODE` to a probability (per-endpoint entries win over global ones for that mode). A drawn
    429 is followed by `burst_429 - 1` more 429s on that endpoint (Braze's limits refuse in bursts). A
    drawn 202 still applies the request (queued, not lost) but answers 202 without per-object errors.
    """

    def __init__(
        self,
        *,
        fault_rate: float = 0.0,
        faults: dict[str, float] | None = None,
        seed: int = 0,
        burst_429: int = 1,
    ) -> None:
        if not 0.0 <= fault_rate <= 1.0:
            raise ValueError("fault_rate must be between 0 and 1")
        if burst_429 < 1:
            raise ValueError("burst_429 must be at least 1")
        self.seed = seed
        self.burst_429 = burst_429
        self._burst_left: dict[str, int] = {}
        self.global_rates = {m: fault_rate / len(SPREAD_MODES) for m in SPREAD_MODES} if fault_rate else {}
        self.endpoint_rates: dict[str, dict[str, float]] = {}
        for key, rate in (faults or {}).items():
            endpoint, _, mode = key.rpartition(":")
            if mode not in MODES:
                raise ValueError(f"unknown fault mode {mode!r}; use one of {', '.join(MODES)}")
            if endpoint:
                self.endpoint_rates.setdefault(endpoint, {})[mode] = rate
            else:
                self.global_rates[mode] = self.global_rates.get(mode, 0.0) + rate
        self._rngs: dict[str, random.Random] = {}

    @property
    def enabled(self) -> bool:
        """Whether any fault can ever be injected."""
        return bool(self.global_rates or self.endpoint_rates)

    def draw(self, endpoint: str) -> str | None:
        """Return the fault mode for the next request to `endpoint`, or None."""
        rates = {**self.global_rates, **self.endpoint_rates.get(endpoint, {})}
        if not rates:
            return None
        left = self._burst_left.get(endpoint, 0)
        if left > 0:
            # A 429 fault comes as a burst: the next requests to the endpoint are refused too.
            self._burst_left[endpoint] = left - 1
            return "429"
        rng = self._rngs.get(endpoint)
        if rng is None:
            rng = self._rngs[endpoint] = random.Random(f"{self.seed}:{endpoint}")
        u = rng.random()
        acc = 0.0
        for mode in MODES:
            acc += rates.get(mode, 0.0)
            if u < acc:
                if mode == "429":
                    self._burst_left[endpoint] = self.burst_429 - 1
                return mode
        return None
