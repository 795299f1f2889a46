"""What plans cost authorize: the scripts of a git ref against today's, interleaved in one run.

Three cases on one throwaway Redis, each a hot wallet with one grant and no rate limit:
`baseline` (authorize.lua and its shared files at `--ref`), `no plan` (today's scripts, a
wallet without a plan: the hot path every existing wallet takes) and `plan` (today's scripts,
a wallet on a monthly plan, mid-period: the renewal check only). Rounds alternate the cases so
that a noisy machine slows each alike; the figure is the median Redis CPU per call (INFO cpu)
of pipelined EVALSHA, and its ratio to the baseline.

    python load/bench_plan_check.py --ref af8020e            # ~1 min
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import redis
from bench_engine import CASES, Calls, Case, fund, pipelined, scripts_at
from measure import describe_machine

from kong_credits.redis_server import EmbeddedRedis


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", required=True, help="git ref of the baseline scripts")
    parser.add_argument("--calls", type=int, default=20_000, help="pipelined calls per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    hot = CASES[0]
    cases = [Case("baseline", 1, 1, 0, scripts_at(args.ref)), Case("no plan", 1, 1, 0),
             Case("plan", 1, 1, 0, plan=True)]
    assert hot.script is cases[1].script
    cpu: dict[str, list[float]] = {case.name: [] for case in cases}
    rate: dict[str, list[float]] = {case.name: [] for case in cases}
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(EmbeddedRedis()).url
        client = redis.Redis.from_url(url)
        calls = []
        for number, case in enumerate(cases):
            client.script_load(case.script.source)
            calls.append(Calls(case, f"p{number}"))
            fund(client, calls[-1])
            pipelined(url, client, calls[-1], 2_000, args.batch)  # warm up
        for _ in range(args.rounds):
            for case, case_calls in zip(cases, calls, strict=True):
                measured = pipelined(url, client, case_calls, args.calls, args.batch)
                cpu[case.name].append(measured.redis_cpu_us)
                rate[case.name].append(measured.calls_per_s)
        info = client.info("server")
        client.close()
    base = statistics.median(cpu["baseline"])
    print(f"Run: {time.strftime('%Y-%m-%d %H:%M')} UTC, `python load/bench_plan_check.py "
          f"--ref {args.ref}`: {args.rounds} interleaved rounds of {args.calls:,} pipelined "
          "authorize calls per case, medians.\n")
    for line in describe_machine(info):
        print(line)
    print("\n| case | Redis CPU µs/call | vs baseline | pipelined calls/s | CPU µs per round |")
    print("| --- | ---: | ---: | ---: | --- |")
    for case in cases:
        median = statistics.median(cpu[case.name])
        rounds = " ".join(f"{value:.1f}" for value in cpu[case.name])
        print(f"| {case.name} | {median:.1f} | {median / base:.3f}x | "
              f"{statistics.median(rate[case.name]):,.0f} | {rounds} |")


if __name__ == "__main__":
    main()
