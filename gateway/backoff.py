"""Delays between attempts: exponential, capped, with jitter (retries from many jobs spread out
instead of arriving together when a store or receiver comes back)."""
from __future__ import annotations

import random


def delay(attempt: int, base: float, cap: float) -> float:
    """Seconds to wait after the `attempt`-th failure (from 1): base, 2 base, 4 base, ... up to
    `cap`, each drawn from its upper half."""
    ceiling = min(cap, base * 2 ** min(attempt - 1, 30))
    return random.uniform(ceiling / 2, ceiling)
