"""/health latency while the server receives and handles large requests.

    python bench/serve_health_under_load.py [--run RUN] [--mb 10] [--kind chat|completion] [--repeat 5]

Starts `myllm serve RUN --threads 1 --max-body-mb 16` in a subprocess (as a user would run it;
on this machine it shares the 2 CPU cores with this client), sends `--repeat` `--mb` MB requests
one after another from a thread, and meanwhile asks /health every 2 ms. Printed: /health latency
p50 / p95 / max with no load and while the large requests were in flight, and their status and
times. (`--server-flags ''` runs a server without the flag, e.g. an older checkout through
PYTHONPATH, for comparison.) Without --run, a throwaway run (a small tokenizer and a random
model, context 1024) is built in a temporary folder. A 10 MB prompt cannot fit any context: it
is refused (400, context_length_exceeded) after being received, decoded and validated, all off
the event loop.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx


def throwaway_run(root: Path) -> Path:
    import torch

    from myllm.config import ModelConfig
    from myllm.model import Transformer
    from myllm.tokenizer import train_tokenizer
    from myllm.train.checkpoint import save_checkpoint

    run = root / "run"
    words = "the cat sat on a mat while the dog ran to town and the baker sold bread".split()
    texts = [" ".join(words[(i * 7 + j) % len(words)] for j in range(40)) for i in range(500)]
    tok = train_tokenizer(texts, 512, run / "tokenizer" / "tokenizer.json")
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=tok.vocab_size, d_model=64, n_layers=2, n_heads=2, n_kv_heads=1,
                                    d_ff=128, context=1024))
    save_checkpoint(run / "checkpoints" / "pretrain", 1, model, None, {"done": True}, keep_last=1)
    return run


def poll(url: str, until: threading.Event | None, seconds: float) -> list[float]:
    """/health latencies in ms, every 2 ms, while `until` is unset (or for `seconds`)."""
    lat, end = [], time.monotonic() + seconds
    with httpx.Client() as c:
        while (not until.is_set()) if until is not None else time.monotonic() < end:
            start = time.perf_counter()
            c.get(url + "/health").raise_for_status()
            lat.append((time.perf_counter() - start) * 1000)
            time.sleep(0.002)
    return lat


def summary(lat: list[float]) -> str:
    p95 = sorted(lat)[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))]
    return f"p50 {statistics.median(lat):.1f} ms, p95 {p95:.1f} ms, max {max(lat):.1f} ms ({len(lat)} requests)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", help="a run directory with a model (default: a throwaway one)")
    ap.add_argument("--mb", type=float, default=10.0)
    ap.add_argument("--kind", choices=["chat", "completion"], default="chat")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--server-flags", default="--max-body-mb 16")
    a = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    run = Path(a.run) if a.run else throwaway_run(Path(tmp.name))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "myllm", "serve", str(run), "--port", str(port), "--threads", "1",
           *a.server_flags.split()]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                model = httpx.get(url + "/health", timeout=1).json()["model"]
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the server did not start: {' '.join(cmd)}") from None
                time.sleep(0.2)
        text = "the cat " * int(a.mb * 1e6 / 8)
        body = ({"model": model, "messages": [{"role": "user", "content": text}]} if a.kind == "chat"
                else {"model": model, "prompt": text})
        raw = json.dumps(body).encode()
        idle = poll(url, None, 2.0)
        done, got = threading.Event(), {}

        def big() -> None:
            for _ in range(a.repeat):
                start = time.perf_counter()
                r = httpx.post(url + ("/v1/chat/completions" if a.kind == "chat" else "/v1/completions"),
                               content=raw, headers={"content-type": "application/json"}, timeout=120)
                got.setdefault("seconds", []).append(time.perf_counter() - start)
                got["status"], got["body"] = r.status_code, r.text[:100]
            done.set()

        t = threading.Thread(target=big)
        t.start()
        loaded = poll(url, done, 0)
        t.join()
        print(f"/health, no load:                  {summary(idle)}")
        print(f"/health, during a {len(raw) / 1e6:.1f} MB {a.kind}: {summary(loaded)}")
        ms = ", ".join(f"{x * 1000:.0f}" for x in got["seconds"])
        print(f"the large requests: HTTP {got['status']} ({got['body']}...) in {ms} ms")
    finally:
        proc.terminate()
        proc.wait(10)
        tmp.cleanup()


if __name__ == "__main__":
    main()
