"""Write the shipped variable-capacity Mahimahi trace (deterministic).

    python sim/traces/make_trace.py > sim/traces/variable-5-40mbit.mahimahi

Capacity wanders between 5 and 40 Mbit/s: a slow sinusoid (period 8 s) plus a
random step every second, as a cellular link might; one line per 1500-byte delivery
opportunity, its time in ms, over 20 s.
"""

import math
import random

random.seed(7)
DURATION_MS = 20_000
steps = [random.uniform(-8, 8) for _ in range(DURATION_MS // 1000 + 1)]
credit = 0.0
for ms in range(DURATION_MS):
    mbps = 22.5 + 12 * math.sin(2 * math.pi * ms / 8000) + steps[ms // 1000]
    mbps = min(40.0, max(5.0, mbps))
    credit += mbps * 1e6 / 8 / 1500 / 1000  # packets per ms
    while credit >= 1:
        print(ms)
        credit -= 1
