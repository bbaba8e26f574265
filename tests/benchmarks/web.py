"""The console's web stack against a bare aiohttp server, side by side in one run.

    .venv/bin/python -m tests.benchmarks.web [--requests 5000] [--concurrency 20]

Both serve the same small JSON answer from the same process, one after the other: FastAPI
under uvicorn (what the console runs: typed response models, OpenAPI, dependency-checked
roles) and aiohttp's own server (what the gateway used before the console). A client with
``--concurrency`` requests in flight times ``--requests`` GETs against each. Figures and the
ratio only: the point is what the console's framework costs on a store box.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import time

import aiohttp
import uvicorn
from aiohttp import web
from fastapi import FastAPI
from pydantic import BaseModel

PAYLOAD = {"status": "ok", "devices": 42, "outbox": {"depth": 0}}


class Health(BaseModel):
    status: str
    devices: int
    outbox: dict[str, int]


def fastapi_app() -> FastAPI:
    app = FastAPI()

    @app.get("/healthz", response_model=Health)
    async def healthz() -> Health:
        return Health.model_validate(PAYLOAD)

    return app


async def aiohttp_handler(request: web.Request) -> web.Response:
    return web.json_response(PAYLOAD)


async def hammer(url: str, requests: int, concurrency: int) -> float:
    async with aiohttp.ClientSession() as session:
        left = requests

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                async with session.get(url) as response:
                    await response.read()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return requests / (time.perf_counter() - started)


def free_socket() -> socket.socket:
    """A listening socket on a free port, as the console hands uvicorn its own. (Its protocol
    must be IPPROTO_TCP, as getaddrinfo gives it: asyncio sets TCP_NODELAY on accepted
    connections only then, and without it every answer waits 40 ms for a delayed ACK.)"""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def measure(requests: int, concurrency: int) -> None:
    print(f"load before: {os.getloadavg()[0]:.2f} (1 min), {requests:,} requests, "
          f"{concurrency} in flight", flush=True)  # fmt: skip
    sock = free_socket()
    server = uvicorn.Server(uvicorn.Config(fastapi_app(), log_level="warning", lifespan="off"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/healthz"
    await hammer(url, 200, concurrency)  # warm up
    fastapi_rate = await hammer(url, requests, concurrency)
    server.should_exit = True
    await serving

    app = web.Application()
    app.router.add_get("/healthz", aiohttp_handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.SockSite(runner, free_socket())
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/healthz"
    await hammer(url, 200, concurrency)
    aiohttp_rate = await hammer(url, requests, concurrency)
    await runner.cleanup()
    print(f"  FastAPI + uvicorn  {fastapi_rate:>8,.0f} requests/s")
    print(f"  aiohttp            {aiohttp_rate:>8,.0f} requests/s")
    print(f"FastAPI / aiohttp: {fastapi_rate / aiohttp_rate:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(measure(args.requests, args.concurrency))


if __name__ == "__main__":
    main()
