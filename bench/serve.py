"""Serving under load: many concurrent streaming chats against a live `myllm serve`.

    python bench/serve.py [--run /tmp/pt] [--chats 32] [--turns 2] [--max-tokens 48]

Starts `myllm serve RUN` in a subprocess (its own process, as a user would run it; on this
machine it shares the 2 CPU cores with the clients), then runs `--chats` chats at once with
the official `openai` async client. Each chat sends `--turns` user turns (questions from the
run's `tasks/sft.jsonl`, else generic ones) and streams every reply, resending the history
each turn. Printed: errors, time to first token (p50/p95: request sent -> first content
chunk), generated tokens/s over the whole run (from the server's `usage` counts), per-reply
decode speed, and the largest number of sequences the engine decoded in one step.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai


def questions(run: Path, n: int) -> list[str]:
    path = run / "tasks" / "sft.jsonl"
    found: list[str] = []
    if path.is_file():
        with open(path) as f:
            for line in f:
                for m in json.loads(line)["messages"]:
                    if m["role"] == "user":
                        found.append(m["content"])
                if len(found) >= n:
                    break
    return found[:n] or [f"Tell me about town number {i}." for i in range(n)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


async def chat(client: openai.AsyncOpenAI, model: str, turns: list[str], max_tokens: int, seed: int,
               results: list[dict]) -> None:
    history: list[dict] = []
    for text in turns:
        history.append({"role": "user", "content": text})
        t0 = time.perf_counter()
        first, reply, usage = None, "", None
        stream = await client.chat.completions.create(model=model, messages=history, max_tokens=max_tokens,
                                                      temperature=0.8, seed=seed, stream=True,
                                                      stream_options={"include_usage": True})
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                if first is None:
                    first = time.perf_counter()
                reply += chunk.choices[0].delta.content
            if chunk.usage is not None:
                usage = chunk.usage
        end = time.perf_counter()
        tokens = usage.completion_tokens if usage else 0
        results.append({"ttft": (first or end) - t0, "seconds": end - t0, "tokens": tokens,
                        "decode_tps": (tokens - 1) / (end - first) if first and tokens > 1 and end > first else None})
        history.append({"role": "assistant", "content": reply})


async def load(url: str, model: str, chats: int, turns: int, max_tokens: int, qs: list[str]) -> dict:
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="bench", max_retries=0, timeout=300)
    results: list[dict] = []
    jobs = [chat(client, model, [qs[(c * turns + t) % len(qs)] for t in range(turns)], max_tokens, c, results)
            for c in range(chats)]
    t0 = time.perf_counter()
    outcomes = await asyncio.gather(*jobs, return_exceptions=True)
    wall = time.perf_counter() - t0
    errors = [repr(o) for o in outcomes if isinstance(o, BaseException)]
    await client.close()
    return {"results": results, "errors": errors, "wall": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="/tmp/pt")
    ap.add_argument("--chats", type=int, default=32)
    ap.add_argument("--turns", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="the server's PyTorch threads (0 = PyTorch's default)")
    a = ap.parse_args()
    run = Path(a.run)
    load_before = os.getloadavg()[0]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "myllm", "serve", str(run), "--port", str(port), "--max-batch", str(a.max_batch),
           "--threads", str(a.threads)]
    server = subprocess.Popen(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                health = httpx.get(url + "/health", timeout=1).json()
                break
            except httpx.TransportError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the server did not start") from None
                time.sleep(0.2)
        model = health["model"]
        server_cpu, client_cpu = cpu_seconds(server.pid), time.process_time()
        out = asyncio.run(load(url, model, a.chats, a.turns, a.max_tokens, questions(run, a.chats * a.turns)))
        after = httpx.get(url + "/health").json()
        server_cpu, client_cpu = cpu_seconds(server.pid) - server_cpu, time.process_time() - client_cpu
    finally:
        server.terminate()
        server.wait(10)
    res = out["results"]
    ttft = [r["ttft"] for r in res]
    tokens = sum(r["tokens"] for r in res)
    tps = [r["decode_tps"] for r in res if r["decode_tps"]]
    print(f"{a.chats} concurrent streaming chats x {a.turns} turns on {os.cpu_count()} cores, model '{model}' "
          f"({run}), max_tokens {a.max_tokens}, server threads {a.threads or 'default'}; load average before "
          f"{load_before:.1f}")
    print(f"requests: {len(res)} completed, {len(out['errors'])} errors" +
          (f" (first: {out['errors'][0]})" if out["errors"] else ""))
    if res:
        p50, p95 = percentile(ttft, 0.5) * 1000, percentile(ttft, 0.95) * 1000
        print(f"time to first token: p50 {p50:.0f} ms, p95 {p95:.0f} ms")
        print(f"throughput: {tokens} tokens in {out['wall']:.2f} s = {tokens / out['wall']:.0f} tok/s generated "
              f"(all chats together); per reply decode {statistics.median(tps) if tps else 0:.0f} tok/s median")
    print(f"CPU time during the run: server {server_cpu:.2f} s, clients {client_cpu:.2f} s "
          f"(wall {out['wall']:.2f} s; the rest of the machine's load is other processes)")
    print(f"engine: up to {after['max_active']} sequences in one decode step; {after['active']} active and "
          f"{after['free_slots']}/{after['slots']} slots free at the end")


if __name__ == "__main__":
    main()
