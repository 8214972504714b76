"""What a fixed CPU cost per call does to 32 concurrent calls on one event loop, without litellm: a raw aiohttp
client against the same fake OpenAI server as bench_llm_throughput.py (0.3 s per call), spinning a fixed
amount of CPU per call (half before the request, half after the answer). It tells how much client CPU per
call a loop can afford on this machine for a given ratio to the latency-bound ideal, to set beside
bench_llm_throughput.py's `cpu ms/call` (litellm's cost).

    PYTHONPATH=. python benchmarks/probe_llm_standin.py [--concurrency 32] [--calls 384] [--spin-ms 0 2 4 6 8 10]

2026-12-02 (load ~1, a machine where litellm costs 10-12 ms per call), the same loop run as a one-off script
before it became this file: ratio 0.98 at 0 ms, 0.90 at 2, 0.79 at 4, 0.70 at 6, 0.65 at 8, 0.54 at 10. This
file itself, `--spin-ms 0 4 --calls 128` beside a CI run: 0.94 at 0 ms, 0.68 at 4.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import aiohttp

from benchmarks.bench_llm_throughput import build_prompts, start_server


def spin(ms: float) -> None:
    end = time.thread_time() + ms / 1000
    while time.thread_time() < end:
        pass


async def run(base_url: str, concurrency: int, calls: int, spin_ms: float) -> tuple[float, float]:
    """(wall seconds, CPU seconds) for `calls` calls, `concurrency` at a time."""
    queue = build_prompts(calls * 8, 8, salt=f"standin-{time.time_ns()}")
    async with aiohttp.ClientSession() as session:

        async def worker() -> None:
            while queue:
                prompt = queue.pop()
                spin(spin_ms / 2)
                body = {"model": "bench-model", "response_format": {"type": "json_object"},
                        "messages": [{"role": m.role, "content": m.content} for m in prompt.messages]}
                async with session.post(f"{base_url}/chat/completions", json=body) as response:
                    await response.json()
                spin(spin_ms / 2)

        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=0.3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--calls", type=int, default=384)
    parser.add_argument("--spin-ms", type=float, nargs="+", default=[0, 2, 4, 6, 8, 10])
    args = parser.parse_args()
    server, base_url = start_server(args.latency)
    try:
        ideal = args.concurrency / args.latency
        for spin_ms in args.spin_ms:
            wall, cpu = asyncio.run(run(base_url, args.concurrency, args.calls, spin_ms))
            print(f"spin {spin_ms:>4.1f} ms/call: ratio {args.calls / wall / ideal:.2f}, "
                  f"client CPU {cpu / args.calls * 1000:.1f} ms/call, {cpu / wall:.2f} cores", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
