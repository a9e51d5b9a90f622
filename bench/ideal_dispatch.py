#!/usr/bin/env python3
"""The best p99 any balancer could reach in bench/adaptive.sh's scenario: a lower bound.

usage: ideal_dispatch.py [RATE] [SERVICE_MS] [SEED]

bench/adaptive.sh feeds Poisson arrivals to single-slot backends that each take SERVICE_MS per
request. Even a clairvoyant balancer cannot beat one shared FIFO queue in front of the healthy
backends (M/D/c: each request goes to whichever backend frees first), so that queue's p99 is
the floor under every row of the report:

- phase A: three healthy backends share the load;
- phase B: one backend is 20x slower. Any request it takes lasts at least 20 x SERVICE_MS,
  beyond the p99 of the others, so at best it takes under 1 % of the requests; the two fast
  backends carry the rest (at 300 req/s and 5 ms, 75 % busy instead of 50 %).

The ratio of the two floors is what "B p99 / A p99" can be with perfect dispatch and zero
proxy overhead: queueing alone, no balancer in it. Overhead the proxies add to every request
(the network hops) shrinks the ratio a little, since it is added to both phases.

>>> a = p99_ms(servers=3, rate=300.0, service_ms=5.0, requests=20000, seed=1)
>>> b = p99_ms(servers=2, rate=300.0, service_ms=5.0, requests=20000, seed=1)
>>> 5.0 <= a < b
True
>>> 2.0 < b / a < 3.0
True

With the load light enough that requests never meet, the p99 is the service time itself:

>>> p99_ms(servers=3, rate=1.0, service_ms=5.0, requests=200, seed=1)
5.0
"""

import heapq
import random
import sys


def p99_ms(servers, rate, service_ms, requests=200_000, seed=1):
    """p99 latency (ms) of one FIFO queue before `servers` identical single-slot servers."""
    rnd = random.Random(seed)
    service = service_ms / 1000.0
    free_at = [0.0] * servers
    now = 0.0
    latencies = []
    for _ in range(requests):
        now += rnd.expovariate(rate)
        start = max(now, heapq.heappop(free_at))
        heapq.heappush(free_at, start + service)
        latencies.append(start + service - now)
    latencies.sort()
    return round(latencies[int(0.99 * (len(latencies) - 1))] * 1000.0, 3)


def floors(rate, service_ms, seed=1):
    """(A floor, B floor, B/A) for the scenario's three backends, one of them slow in B."""
    a = p99_ms(3, rate, service_ms, seed=seed)
    b = p99_ms(2, rate, service_ms, seed=seed)
    return a, b, b / a


def main():
    rate = float(sys.argv[1]) if len(sys.argv) > 1 else 300.0
    service_ms = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    a, b, ratio = floors(rate, service_ms, seed)
    print(f"ideal dispatch at {rate:g} req/s, {service_ms:g} ms per request: "
          f"A p99 {a:.1f} ms, B p99 {b:.1f} ms, B/A {ratio:.2f}x")


if __name__ == "__main__":
    main()
