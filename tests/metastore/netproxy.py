"""A TCP proxy per directed peer link, with faults: blackhole, delay, drop.

Replica A dials replica B through ``LinkProxy(A, B)``; A's messages to B cross
it (B answers on its own link B->A). The proxy understands ZMTP 3 framing --
a 64-byte greeting, then frames ``flags, size, body`` -- so that it can drop
or delay whole ZeroMQ messages without corrupting the stream:

- ``blackhole``: every message is lost (handshake commands wait for healing);
- ``delay`` (mean, jitter): each message waits mean ± jitter, in order;
- ``drop`` p: each message is lost with probability p.

All proxies of a test share one asyncio loop in a daemon thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from dataclasses import dataclass, field

from zdf.wire.sockets import free_port

GREETING = 64
MORE, LONG, COMMAND = 0x01, 0x02, 0x04


@dataclass
class LinkProxy:
    src: str
    dst: str
    target: str
    port: int = field(default_factory=free_port)
    blackhole: bool = False
    delay: tuple[float, float] = (0.0, 0.0)
    drop: float = 0.0
    passed: int = 0
    dropped: int = 0
    rng: random.Random = field(default_factory=random.Random)

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def heal(self) -> None:
        self.blackhole, self.delay, self.drop = False, (0.0, 0.0), 0.0

    def _lose(self) -> bool:
        return self.blackhole or (self.drop > 0 and self.rng.random() < self.drop)

    def _wait(self) -> float:
        mean, jitter = self.delay
        return max(0.0, mean + self.rng.uniform(-jitter, jitter)) if mean or jitter else 0.0


class ProxyNet:
    """Proxies for every directed link of a cluster: ``route`` for ``MetastoreCluster``."""

    def __init__(self) -> None:
        self.links: dict[tuple[str, str], LinkProxy] = {}
        self._loop = asyncio.new_event_loop()
        self._servers: list[asyncio.AbstractServer] = []
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    def route(self, src: str, dst: str, target: str) -> str:
        link = LinkProxy(src, dst, target)
        self.links[(src, dst)] = link
        fut = asyncio.run_coroutine_threadsafe(self._serve(link), self._loop)
        fut.result(5)
        return link.addr

    def link(self, src: str, dst: str) -> LinkProxy:
        return self.links[(src, dst)]

    def touching(self, name: str) -> list[LinkProxy]:
        return [link for (a, b), link in self.links.items() if name in (a, b)]

    def isolate(self, name: str) -> None:
        for link in self.touching(name):
            link.blackhole = True

    def heal_all(self) -> None:
        for link in self.links.values():
            link.heal()

    def close(self) -> None:
        async def stop() -> None:
            for server in self._servers:
                server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    # -- the proxy --------------------------------------------------------------------
    async def _serve(self, link: LinkProxy) -> None:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            host, port = link.target.rsplit(":", 1)
            try:
                up_reader, up_writer = await asyncio.open_connection(host, int(port))
            except OSError:
                writer.close()
                return
            tasks = [
                asyncio.ensure_future(_forward(link, reader, up_writer)),
                asyncio.ensure_future(_backward(link, up_reader, writer)),
            ]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                task.cancel()
            for w in (writer, up_writer):
                w.close()

        server = await asyncio.start_server(accept, "127.0.0.1", link.port)
        self._servers.append(server)


async def _forward(link: LinkProxy, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    """Source -> target, message by message, with the link's faults."""
    got = 0
    while got < GREETING:
        chunk = await reader.read(GREETING - got)
        if not chunk:
            return
        got += len(chunk)
        w.write(chunk)
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
    pump = asyncio.ensure_future(_deliver(queue, w))
    try:
        last_due = 0.0
        message = bytearray()
        while True:
            head = await reader.readexactly(1)
            flags = head[0]
            size_raw = await reader.readexactly(8 if flags & LONG else 1)
            size = int.from_bytes(size_raw, "big")
            body = await reader.readexactly(size)
            frame = head + size_raw + body
            if flags & COMMAND:
                while link.blackhole:
                    await asyncio.sleep(0.01)
                last_due = max(last_due, time.monotonic())
                queue.put_nowait((last_due, frame))
                continue
            message += frame
            if flags & MORE:
                continue
            data, message = bytes(message), bytearray()
            if link._lose():
                link.dropped += 1
                continue
            link.passed += 1
            last_due = max(last_due, time.monotonic() + link._wait())
            queue.put_nowait((last_due, data))
    except (asyncio.IncompleteReadError, ConnectionError):
        return
    finally:
        pump.cancel()


async def _deliver(queue: asyncio.Queue[tuple[float, bytes]], w: asyncio.StreamWriter) -> None:
    while True:
        due, data = await queue.get()
        wait = due - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        w.write(data)
        await w.drain()


async def _backward(link: LinkProxy, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    """Target -> source: the handshake and little else; held while blackholed."""
    while True:
        chunk = await reader.read(65536)
        if not chunk:
            return
        while link.blackhole:
            await asyncio.sleep(0.01)
        w.write(chunk)
        await w.drain()
