"""`myllm serve`: load a run's model and serve it with uvicorn.

Only safe formats are read: the weights from `model.safetensors`, the shape from `state.json`,
the tokenizer from `tokenizer.json`. Nothing is unpickled (a checkpoint's `optim.pt` is never
opened), so serving a run directory someone else wrote cannot execute their code.
"""

from __future__ import annotations

import errno
import math
import socket
from pathlib import Path

import torch

from myllm.device import describe, place_model, resolve_device
from myllm.errors import MyLLMError
from myllm.model import Transformer
from myllm.rundir import RunDir
from myllm.serve.limits import DEFAULT_MAX_BODY_MB, DEFAULT_REQUEST_TIMEOUT, protocol_with_timeout
from myllm.tokenizer import Tokenizer


def serving_device(device: str | torch.device) -> torch.device:
    """`--device` (auto | cpu | cuda | cuda:N) as a torch device; one already resolved passes through."""
    return device if isinstance(device, torch.device) else resolve_device(device, "--device")


def load_for_serving(run_dir: RunDir | Path, stage: str | None = None, checkpoint: Path | None = None,
                     device: str | torch.device = "auto") -> tuple[Transformer, Tokenizer, Path]:
    """The model (final checkpoint, or the latest of `stage`) on `device` in its inference dtype
    (`myllm.device.place_model`: bf16 on CUDA, fp32 on CPU), the tokenizer, and the checkpoint path."""

    device = serving_device(device)  # a bad --device stops before anything is read
    run = RunDir.of(run_dir)
    if not run.root.is_dir():
        raise MyLLMError(f"run directory {run} does not exist; train one with `myllm run --out {run}`")
    if checkpoint is not None:
        path = Path(checkpoint)
    else:
        path = run.model_checkpoint(stage or None, unfinished=bool(stage))
    tok_path = run.require_tokenizer()
    try:
        model = run.load_model(path)
    except MyLLMError:
        raise
    except Exception as e:  # a corrupt or foreign model.safetensors: say which file, not a traceback
        raise MyLLMError(f"cannot load {path / 'model.safetensors'} ({type(e).__name__}: {e}); "
                         "it must be a safetensors file written by myllm") from None
    # Loaded on the CPU (as stored), then moved: the engine allocates its KV cache on the weights'
    # device and dtype, so placing the model places everything the server computes.
    return place_model(model, device), Tokenizer.load(tok_path), path


def tcp_socket(family: int = socket.AF_INET, proto: int = socket.IPPROTO_TCP) -> socket.socket:
    """A TCP socket that says so: asyncio turns Nagle's algorithm off (TCP_NODELAY) only on sockets
    whose proto is IPPROTO_TCP, and with it on (proto 0) each keep-alive response waited ~40 ms
    for the client's delayed ACK (measured: /health 45 ms on a reused connection, 1 ms after)."""
    return socket.socket(family, socket.SOCK_STREAM, proto or socket.IPPROTO_TCP)


def check_flags(port: int, max_body_mb: float, request_timeout: float, api_key: str | None = None) -> None:
    """Refuse values that cannot work before anything loads (NaN fails every comparison)."""
    if api_key is not None and not api_key.strip():
        raise MyLLMError("--api-key is empty: give a secret (clients send it as `Authorization: Bearer KEY`), "
                         "or leave the flag out to serve without one")
    if not 0 <= port <= 65535:
        raise MyLLMError(f"--port must be 1..65535 (or 0 for any free port), got {port}")
    if not 0 < max_body_mb < math.inf:
        raise MyLLMError(f"--max-body-mb must be a positive number of megabytes, got {max_body_mb}")
    if not 0.1 <= request_timeout <= 24 * 3600:  # below 0.1 s no request could even arrive whole
        raise MyLLMError(f"--request-timeout must be from 0.1 s to a day (86400 s), got {request_timeout}")


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket on (host, port), or one line saying why not and what to do."""
    try:
        family, _, proto, *_ = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as e:
        raise MyLLMError(f"--host {host!r} is not an address of this machine ({e}); use 127.0.0.1 (this machine "
                         "only) or 0.0.0.0 (every interface)") from None
    sock = tcp_socket(family, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: restart without waiting
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        if isinstance(e, PermissionError):
            fix = "ports below 1024 need root; use a port such as 8000"
        elif e.errno == errno.EADDRINUSE:
            fix = "another server is using it; stop it or pick another --port"
        elif e.errno == errno.EADDRNOTAVAIL:
            fix = "that address is not on this machine; use 127.0.0.1 or 0.0.0.0"
        else:
            fix = "pick another --host or --port"
        raise MyLLMError(f"cannot listen on {host} port {port} ({e.strerror or e}); {fix}") from None
    return sock


def serve(run_dir: Path, stage: str | None = None, host: str = "127.0.0.1", port: int = 8000,
          api_key: str | None = None, max_batch: int = 32, threads: int = 0,
          sock: socket.socket | None = None, max_body_mb: float = DEFAULT_MAX_BODY_MB,
          request_timeout: float = DEFAULT_REQUEST_TIMEOUT, device: str | torch.device = "auto") -> None:
    """Run the server until interrupted (blocking), on `device` (`load_for_serving`).

    A bad --port or --host, or a port in use, is one line (`bind`), not uvicorn's traceback.
    `threads` > 0 sets PyTorch's intra-op threads. One decode step of a small model is too little
    work to split: on the 2-core development machine, shared with other jobs, the 1M-parameter
    default model took 12 ms per 32-sequence step with 1 thread and 60-300 ms with 2.
    """
    import uvicorn

    from myllm.serve.app import create_app

    check_flags(port, max_body_mb, request_timeout, api_key)
    device = serving_device(device)
    if threads > 0:
        torch.set_num_threads(threads)
    model, tok, path = load_for_serving(run_dir, stage, device=device)
    own = sock is None
    sock = bind(host, port) if own else sock
    try:
        app = create_app(model, tok, Path(run_dir).resolve().name, api_key=api_key, max_batch=max_batch,
                         max_body_mb=max_body_mb, request_timeout=request_timeout)
        where = f"http://{host}:{sock.getsockname()[1]}" if own else "the given socket"
        weights = model.embed_tokens.weight
        print(f"serving {path} as '{Path(run_dir).resolve().name}' at {where} (chat page at /, API at /v1); "
              f"device: {describe(weights.device, weights.dtype)}", flush=True)
        config = uvicorn.Config(app, log_level="warning", http=protocol_with_timeout(request_timeout))
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        if own:
            sock.close()


class ServerThread:
    """A uvicorn server for `app` on a background thread, bound to 127.0.0.1 on a free port
    (tests, benchmarks and notebooks: `with ServerThread(app) as url: ...`)."""

    def __init__(self, app, host: str = "127.0.0.1", request_timeout: float = DEFAULT_REQUEST_TIMEOUT):
        import threading

        import uvicorn

        self.sock = tcp_socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.url = f"http://{host}:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning",
                                                    http=protocol_with_timeout(request_timeout)))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> str:
        import time

        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()
