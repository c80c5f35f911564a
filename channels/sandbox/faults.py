"""Make a provider API of the sandbox answer 429 or 5xx, for tests and benchmarks of the retry path."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass

from django.conf import settings

FAULT_PROVIDERS = ("sendgrid", "twilio", "mastodon", "bluesky")


@dataclass
class Fault:
    status: int
    share: float = 1.0
    remaining: int | None = None  # None: until cleared
    retry_after: int | None = None
    after: int = 0  # requests let through before the fault starts


_faults: dict[str, Fault] = {}
_faults_lock = threading.Lock()


def sandbox_fault_set(
    *,
    provider: str,
    status: int,
    share: float = 1.0,
    count: int | None = None,
    retry_after: int | None = None,
    after: int = 0,
) -> None:
    """Answer ``status`` to ``share`` of ``provider``'s requests (``count`` of them only, if given),
    starting after the next ``after`` requests."""
    if provider not in FAULT_PROVIDERS:
        raise ValueError(f"Unknown sandbox provider {provider!r}; expected one of {', '.join(FAULT_PROVIDERS)}.")
    if not (status == 429 or 500 <= status <= 599):
        raise ValueError(f"A sandbox fault is a 429 or a 5xx status, got {status}.")
    if not 0 < share <= 1:
        raise ValueError(f"The share of failing requests must be in (0, 1], got {share}.")
    if count is not None and count < 1:
        raise ValueError(f"The number of failing requests must be at least 1, got {count}.")
    with _faults_lock:
        _faults[provider] = Fault(status=status, share=share, remaining=count, retry_after=retry_after, after=after)


def sandbox_faults_clear() -> None:
    with _faults_lock:
        _faults.clear()


def fault_for(provider: str) -> Fault | None:
    """The fault this request hits, if any; counts down faults for the next N requests."""
    with _faults_lock:
        fault = _faults.get(provider)
        if fault is None:
            configured = settings.CHORUS_SANDBOX_FAULTS.get(provider)
            fault = Fault(**configured) if configured else None
        if fault is not None and fault.after > 0:
            fault.after -= 1
            return None
        if fault is None or random.random() >= fault.share:  # noqa: S311 - not security
            return None
        if fault.remaining is not None:
            fault.remaining -= 1
            if fault.remaining <= 0:
                del _faults[provider]
        return fault


def fault_headers(fault: Fault, provider: str) -> dict[str, str]:
    if fault.retry_after is None:
        return {}
    headers = {"Retry-After": str(fault.retry_after)}
    if provider == "sendgrid":
        headers["X-RateLimit-Reset"] = str(int(time.time()) + fault.retry_after)
    return headers
