"""The worker's side of short function tasks.

The worker connects a DEALER straight to the master (one hop fewer than going
through its executor), says ``fn_hello`` and then runs the batches the master
sends (``fn_run``). Tasks run in the worker's reactor in short slices, so a
burst of tiny tasks is answered in batches while the reactor still serves the
worker's other sockets between slices. Each result's report says how long the
call took: the master learns durations from it (``zdf.master.fnplacement``).
Between tasks the worker also hears ``fn_steal``: it gives back the named
tasks it has not started (``fn_stolen``), for an idle worker or a cancel.

Each slice's results go straight to their clients' result addresses (a PUSH
per client, made on first use and closed when idle), and ``fn_done`` tells the
master which tasks are finished, without their values. That report is not on
any client's path, so it waits a little (``DONE_DELAY``) to gather the tasks
that finish meanwhile, unless half of the master's window for this worker is
used up or the worker has nothing left to run: an idle worker says so at once,
so that the master can give it work. A task whose client gave no address has its
value in ``fn_done``, sent at once, and the master forwards it.

Leases (``zdf.master.fnleases``): the worker also binds a ROUTER (``direct``,
named in its hello) on which a client holding a lease on it sends lone tasks
(``fn_direct``) past the master. The master says which leases the worker holds
(``fn_lease``, ``fn_revoke``); a task under any other lease is refused
(``fn_refused`` to the client's result address), and the client sends it
through the master. Such tasks run in the same queue as the master's and
reach the master only as counts (``direct`` in ``fn_done``, and
``direct_failed`` for those whose function raised), sent with the next report
or every ``DIRECT_COUNT_INTERVAL``: a lone task costs the worker no second
wake-up.

Pickled functions run only when this executor's ``allow-pickle`` is set;
otherwise the task fails with a ``PermissionError``.

What a task prints or logs is forwarded to its client when the client asked
(``zdf.observe.fnout``: the worker's ``FunctionOutput``, opened around the task).

Task graphs (``zdf.master.fndeps``). Every result also stays in the worker's
object store (``zdf.executor.objstore``) under its store key (the master's task
key; ``lease:tid`` for a task run under a lease) until the master drops it
(``fn_drop``); each report says how many bytes a result packs to, and whether
the store is over its memory limit. A task with inputs comes with, for each,
its store key, the store ports of the workers holding it and its size; inputs
held here are taken from the store as they are, the others fetched
(``zdf.executor.objtransfer``) while other tasks run, and the task joins the
run queue once all are here. A task whose input cannot be had from any holder
is given back to the master (``fn_stolen`` with ``lost``). Values a client
scatters arrive on the direct port (``fn_put``) and are announced to the master
(``fn_stored``).
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any

import zmq

from zdf import protocol as P
from zdf.errors import ProtocolError, ZdfError
from zdf.executor.objstore import give_back_memory, made_under, make_store
from zdf.executor.objtransfer import Failed, Fetcher, StoreServer
from zdf.master.fnleases import MAX_LEASES
from zdf.master.fnqueue import DEFAULT_WINDOW
from zdf.observe.fnout import FunctionOutput, wants_output
from zdf.wire.bigmsg import (
    CHUNK_THRESHOLD,
    DEFAULT_MAX_VALUE_BYTES,
    PUMP_INTERVAL,
    BigSender,
    is_big,
    send_tracked,
)
from zdf.wire.codec import Kind, encode
from zdf.wire.payload import pack, unpack
from zdf.wire.reactor import Reactor, Timer
from zdf.wire.rpc import Call, Channel
from zdf.wire.security import CLIENTS
from zdf.wire.sockets import close_socket, make_socket

log = logging.getLogger(__name__)

SLICE_SECONDS = 0.002
HELLO_TIMEOUT = 1.0
HELLO_RETRY = 0.2
DONE_DELAY = 0.002  # how long a completion report may wait to gather others
DIRECT_COUNT_INTERVAL = 0.5  # the longest a count of tasks run under leases waits
REPLY_IDLE_CLOSE = 60.0  # a client's result socket unused this long is closed
MAX_PICKLED_CACHE = 256
TRIM_BYTES = 8 << 20  # dropped values this large: give the heap back to the system
TRIM_DELAY = 0.05  # after the drops that come together

DIRECT: Any = None  # the key of a task sent under a lease (the master has none for it)
MAX_REPLY_SOCKETS = 256  # clients' result sockets kept open; the least used goes first
PICKLE_REFUSED_BY_MASTER = "!pickle-refused"


def direct_path(fn: str, master_allows_pickle: bool) -> str:
    """A task under a lease passes the master by: its allow-pickle is applied here."""
    return PICKLE_REFUSED_BY_MASTER if fn == P.PICKLED_FN and not master_allows_pickle else fn


# key, fn, frames, reply address, client tid, input values (None: none), store key
Task = tuple[int | None, str, list[Any], str, int, list[Any] | None, Any]


class Waiting:
    """A task whose inputs are being fetched."""

    __slots__ = ("lost", "missing", "task", "values")

    def __init__(self, task: Task, inputs: int) -> None:
        self.task = task
        self.values: list[Any] = [None] * inputs
        self.missing = inputs
        self.lost: list[Any] = []  # store keys no holder had


def _hashable(value: Any) -> bool:
    return isinstance(value, int | str | bytes)


def resolve_function(path: str, cache: dict[str, Any]) -> Any:
    fn = cache.get(path)
    if fn is None:
        module_name, _, qualname = path.partition(":")
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        fn = cache[path] = obj
    return fn


def describe_exception(exc: BaseException) -> dict[str, str]:
    return {
        "type": type(exc).__qualname__,
        "module": type(exc).__module__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
    }


class FunctionRunner:
    def __init__(
        self,
        reactor: Reactor,
        master_addr: str,
        executor_id: str,
        name: str,
        allow_pickle: bool = False,
        host: str = "127.0.0.1",
        session: str = "",
        output: FunctionOutput | None = None,
        store: Any = None,
        memory_limit: int = 0,
        spill_dir: str = "",
    ) -> None:
        self.reactor = reactor
        self.output = output  # forwards a task's output to its client (zdf.observe.fnout)
        # Its own store (spilling into ``spill_dir`` above ``memory_limit``) unless given one.
        self._owns_store = store is None
        self.store = store if store is not None else make_store(memory_limit, spill_dir)
        self.store_server = StoreServer(self.store, host)
        self.fetcher = Fetcher(reactor)
        self.waiting: dict[int, Waiting] = {}  # master key: a task fetching its inputs
        self._fetches: dict[Any, list[Callable[[Any, ZdfError | None], None]]] = {}
        # Inputs not made yet of tasks sent ahead: store key -> (task key, its Waiting,
        # the input's index); filled when made here or announced by ``fn_ready``.
        self.awaiting: dict[Any, list[tuple[int, Waiting, int]]] = {}
        self._freed = 0  # bytes dropped since the heap was last given back
        self._trim_timer: Timer | None = None
        self.master_addr = master_addr
        self.session = session  # the executor's registration: proves this worker is its
        self.closed = False
        self.executor_id = executor_id
        self.name = name
        self.allow_pickle = allow_pickle
        identity = f"{executor_id}/{name}/{os.getpid()}".encode()
        self.channel = Channel(
            reactor,
            make_socket(zmq.DEALER, connect=master_addr, identity=identity, server_role="master"),
            {
                P.FN_RUN: self.on_run,
                P.FN_LEASE: self.on_lease,
                P.FN_REVOKE: self.on_revoke,
                P.FN_STEAL: self.on_steal,
                P.FN_DROP: self.on_drop,
                P.FN_READY: self.on_ready,
                P.FN_FORGET: self.on_forget,
            },
            name=f"fn-{name}",
        )
        self.direct = Channel(
            reactor,
            make_socket(zmq.ROUTER, bind=f"tcp://{host}:*", allow=CLIENTS),
            {P.FN_DIRECT: self.on_direct, P.FN_PUT: self.on_put},
            name=f"fn-direct-{name}",
        )
        self.direct_addr = self.direct.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        # Values of any size: arguments arrive in chunks on both sockets, results to
        # clients leave in chunks (``zdf.wire.bigmsg``); the master says how large.
        self.max_value_bytes = DEFAULT_MAX_VALUE_BYTES
        self.channel.enable_chunks()
        self.direct.enable_chunks()
        self.big_out = BigSender(send_tracked)
        self._pump_timer: Timer | None = None
        # Tasks start once the messages read with them are handled, in the same turn
        # (a lone task waits no loop turn), so that a steal read with them comes first.
        self.channel.on_drained = self._after_read
        self.direct.on_drained = self._after_read
        self.master_allows_pickle = False  # the lease path obeys the master's allow-pickle
        self.leases: dict[str, None] = {}  # insertion-ordered: the oldest go first
        self.queue: deque[Task] = deque()
        self.functions: dict[str, Any] = {}
        self.replies: dict[str, tuple[zmq.Socket[bytes], float]] = {}  # addr: (PUSH, last use)
        self.window = DEFAULT_WINDOW  # the master's prefetch window for this worker
        self._unreported: list[list[Any]] = []  # fn_done entries not sent yet
        self._direct_unreported = 0  # tasks run under leases since the last fn_done
        self._direct_failed = 0  # ... of which the function raised (for the failed count)
        self._report_timer: Timer | None = None
        self._scheduled = False
        self.ran = 0
        self._idle_timer = reactor.call_every(REPLY_IDLE_CLOSE / 2, self._close_idle_replies)
        # Tasks under a lease free no window slot: their count (statistics only) rides
        # on the next report, or goes on its own now and then.
        self._count_timer = reactor.call_every(DIRECT_COUNT_INTERVAL, self._report)
        self.hello()

    def hello(self) -> None:
        if self.closed:
            return
        body = {
            "executor_id": self.executor_id,
            "worker": self.name,
            "direct": self.direct_addr,
            "session": self.session,
            "store": self.store_server.addr,
        }
        self.channel.request(P.FN_HELLO, body, timeout=HELLO_TIMEOUT, callback=self._on_hello)

    def rejoin(self) -> None:
        """Say hello again (the master may have restarted and forgotten this worker).
        What is done is reported first; what has not started is dropped, since the
        master puts it back in its queue (or, a new master, its client sends it again)."""
        self._report()
        self.queue = deque(task for task in self.queue if task[0] is DIRECT)
        self.waiting.clear()
        self.awaiting.clear()
        self.hello()

    def _on_hello(self, result: Any, error: ZdfError | None) -> None:
        if error is not None and not self.closed:
            self.reactor.call_later(HELLO_RETRY, self.hello)
        elif isinstance(result, dict) and isinstance(result.get("window"), int):
            self.window = max(1, result["window"])
            self.master_allows_pickle = result.get("allow_pickle") is True
            limit = result.get("max_value_bytes")
            if isinstance(limit, int) and limit > 0:
                self.max_value_bytes = limit
                for channel in (self.channel, self.direct):
                    if channel.big_in is not None:
                        channel.big_in.max_value_bytes = limit

    def close(self) -> None:
        self.closed = True
        self._idle_timer.cancel()
        self._count_timer.cancel()
        if self._report_timer is not None:
            self._report_timer.cancel()
        if self._trim_timer is not None:
            self._trim_timer.cancel()
        if self._pump_timer is not None:
            self._pump_timer.cancel()
        self.channel.close()
        self.direct.close()
        self.fetcher.close()
        self.store_server.close()
        if self._owns_store:
            self.store.close()  # its spilled files go with it
        for sock, _ in self.replies.values():
            close_socket(sock)
        self.replies.clear()

    def on_run(self, call: Call) -> Any:
        body = P.fields(call.body, tasks=list)
        frames = call.frames
        offset = 0
        for entry in body["tasks"]:
            key, fn, nframes, reply, tid = entry[:5]
            task_frames = frames[offset : offset + nframes]
            offset += nframes
            if len(entry) == 6:
                self._gather_inputs((key, fn, task_frames, reply, tid, None, key), entry[5])
            else:
                self.queue.append((key, fn, task_frames, reply, tid, None, key))
        return None  # run once every message read is handled (``_after_read``)

    # -- inputs -------------------------------------------------------------
    def _gather_inputs(self, task: Task, inputs: Any) -> None:
        """``inputs``: ``[[store key, [holders' store ports], nbytes], ...]``."""
        if not isinstance(inputs, list):
            raise ProtocolError("a task's inputs are not a list")
        key = task[0]
        assert key is not None
        waiting = Waiting(task, len(inputs))
        self.waiting[key] = waiting
        for index, spec in enumerate(inputs):
            if not (isinstance(spec, list) and len(spec) == 3 and isinstance(spec[1], list | None)):
                raise ProtocolError("each input is [store key, holders, nbytes]")
            skey, holders, nbytes = spec
            if skey in self.store:
                waiting.values[index] = self.store[skey]
                waiting.missing -= 1
                continue
            if holders is None or self._made_here_later(skey):
                # Not made yet: made here (a task queued here makes it: a task run under a
                # lease reaches this worker straight from its client, and one that takes
                # its result may come through the master first), or announced by fn_ready.
                self.awaiting.setdefault(skey, []).append((key, waiting, index))
                continue
            self._fetch(skey, holders, nbytes, self._arrived(key, waiting, index, skey))
        self._maybe_ready(key, schedule=False)  # all here: runs once the read is handled

    def _made_here_later(self, skey: Any) -> bool:
        """Whether a task queued here, not run yet, makes ``skey``."""
        return any(task[6] == skey for task in self.queue)

    def _fetch(self, skey: Any, holders: list[str], nbytes: Any, done: Any) -> None:
        """One fetch per value, however many tasks here wait for it."""
        callbacks = self._fetches.get(skey)
        if callbacks is not None:
            callbacks.append(done)
            return
        self._fetches[skey] = [done]

        def fetched(value: Any, error: ZdfError | None) -> None:
            for callback in self._fetches.pop(skey, []):
                callback(value, error)

        size = nbytes if isinstance(nbytes, int) else 0
        self.fetcher.fetch(skey, [h for h in holders if isinstance(h, str)], size, fetched)

    def _arrived(
        self, key: int, waiting: Waiting, index: int, skey: Any
    ) -> Callable[[Any, ZdfError | None], None]:
        def arrived(value: Any, error: ZdfError | None) -> None:
            if self.waiting.get(key) is not waiting:
                return  # given back meanwhile (and perhaps sent here again: not this one)
            waiting.missing -= 1
            if error is None:
                waiting.values[index] = value
            else:
                waiting.lost.append(skey)
            self._maybe_ready(key)

        return arrived

    def _maybe_ready(self, key: int, schedule: bool = True) -> None:
        waiting = self.waiting.get(key)
        if waiting is None or waiting.missing:
            return
        del self.waiting[key]
        if waiting.lost:  # the master has them made again, and places the task anew
            self.channel.notify(P.FN_STOLEN, {"keys": [key], "lost": waiting.lost})
            return
        task = waiting.task
        self.queue.append((*task[:5], waiting.values, task[6]))
        if schedule and not self._scheduled:
            self._scheduled = True
            self.reactor.call_later(0, self.run_slice)

    def _made(self, skey: Any, value: Any) -> None:
        """``skey`` was just made here: the tasks sent ahead that wait for it have it."""
        for key, waiting, index in self.awaiting.pop(skey, ()):
            if self.waiting.get(key) is waiting:
                waiting.values[index] = value
                waiting.missing -= 1
                self._maybe_ready(key, schedule=False)  # the running slice takes it

    def on_ready(self, call: Call) -> Any:
        """``{"inputs": [[store key, [holders' store ports], nbytes], ...]}``: inputs of
        tasks sent ahead, made on other workers: fetched from there."""
        for spec in P.fields(call.body, inputs=list)["inputs"]:
            if not (isinstance(spec, list) and len(spec) == 3 and isinstance(spec[1], list)):
                raise ProtocolError("each input is [store key, holders, nbytes]")
            skey, holders, nbytes = spec
            waiters = self.awaiting.pop(skey, None) if _hashable(skey) else None
            if not waiters:
                continue
            if skey in self.store:
                self.awaiting[skey] = waiters
                self._made(skey, self.store[skey])
                continue
            for key, waiting, index in waiters:
                if self.waiting.get(key) is waiting:
                    self._fetch(skey, holders, nbytes, self._arrived(key, waiting, index, skey))
        return None  # what is ready runs once every message read is handled

    def on_forget(self, call: Call) -> Any:
        """``{"keys": [...]}``: tasks sent ahead that will not run (an input failed); if
        one ran already, its result goes."""
        keys = set(P.fields(call.body, keys=list)["keys"])
        self.queue = deque(task for task in self.queue if task[0] is DIRECT or task[0] not in keys)
        self._forget_waiting(keys)
        for key in keys:
            self.store.pop(key, None)
        return None

    def _forget_waiting(self, keys: set[Any]) -> list[int]:
        """Tasks waiting for inputs, among ``keys``, dropped; their keys."""
        gone = [key for key in self.waiting if key in keys]
        if not gone:
            return gone
        for key in gone:
            del self.waiting[key]  # its fetches go on; their values are dropped
        for skey, waiters in list(self.awaiting.items()):
            kept = [entry for entry in waiters if entry[0] not in keys]
            if kept:
                self.awaiting[skey] = kept
            else:
                del self.awaiting[skey]
        return gone

    def on_drop(self, call: Call) -> Any:
        """The master's word that no one refers to these results any more."""
        store = self.store
        before = store.memory_bytes
        keys = P.fields(call.body, keys=list)["keys"]
        for skey in keys + made_under(store, call.body.get("leases")):  # a client gone
            try:
                del store[skey]
            except (KeyError, TypeError):
                pass
        self._freed += before - store.memory_bytes
        if self._freed >= TRIM_BYTES and self._trim_timer is None:
            self._trim_timer = self.reactor.call_later(TRIM_DELAY, self._trim)
        return None

    def _trim(self) -> None:
        self._trim_timer = None
        self._freed = 0
        give_back_memory()

    def on_put(self, call: Call) -> Any:
        """Values a client scatters: ``{"keys": [...], "nframes": [...]}`` and their frames."""
        body = P.fields(call.body, keys=list, nframes=list)
        frames = call.frames
        offset = 0
        sizes = []
        for skey, nframes in zip(body["keys"], body["nframes"], strict=True):
            if not isinstance(nframes, int) or not 0 < nframes <= len(frames) - offset:
                raise ProtocolError("scattered value frames missing")
            part = frames[offset : offset + nframes]
            offset += nframes
            self.store[skey] = unpack(part)
            sizes.append(sum(len(f) for f in part))
        self.channel.notify(
            P.FN_STORED, {"keys": body["keys"], "nbytes": sizes, "over": self.store.over_limit}
        )
        return {"stored": len(sizes)}

    def _after_read(self) -> None:
        if self.queue and not self._scheduled:
            self.run_slice()

    def on_lease(self, call: Call) -> Any:
        lease = P.fields(call.body, lease=str)["lease"]
        self.leases[lease] = None
        while len(self.leases) > MAX_LEASES:
            del self.leases[next(iter(self.leases))]
        return None

    def on_revoke(self, call: Call) -> Any:
        self.leases.pop(P.fields(call.body, lease=str)["lease"], None)
        return None

    def on_direct(self, call: Call) -> Any:
        """``fn_submit``'s ``tasks`` with ``"reply": addr#token`` and ``"lease": id``."""
        body = P.fields(call.body, reply=str, lease=str)
        reply = body["reply"]
        if "#" not in reply:
            raise ProtocolError("a task under a lease needs the client's result address")
        tasks = P.submitted_tasks(body.get("tasks"), call.frames)
        for skey in body.get("drop") or ():  # results its client released
            self.store.pop(skey, None)
        if body["lease"] not in self.leases:
            tids = [task[0] for task in tasks]
            self._send_to_client(reply, P.FN_REFUSED, {"tids": tids}, [])
            return None
        lease = body["lease"]
        self.queue.extend(
            # Results of tasks under a lease are kept as ``lease:tid``.
            (
                DIRECT,
                direct_path(fn, self.master_allows_pickle),
                frames,
                reply,
                tid,
                None,
                f"{lease}:{tid}",
            )
            for tid, fn, _, frames, _ in tasks
        )
        return None

    def on_steal(self, call: Call) -> Any:
        """Give back the tasks named that have not started (``ref``: echoed)."""
        body = P.fields(call.body, keys=list)
        wanted = set(body["keys"])
        kept: deque[Task] = deque()
        taken = []
        for task in self.queue:
            if task[0] is not DIRECT and task[0] in wanted:
                taken.append(task[0])
            else:
                kept.append(task)
        self.queue = kept
        taken.extend(self._forget_waiting(wanted))
        answer: dict[str, Any] = {"keys": taken}
        if body.get("ref") is not None:
            answer["ref"] = body["ref"]
        self.channel.notify(P.FN_STOLEN, answer)
        return None

    def run_slice(self) -> None:
        self._scheduled = False
        deadline = time.perf_counter() + SLICE_SECONDS
        done: list[list[Any]] = []  # fn_done entries for the master
        via_master: list[Any] = []  # values of tasks whose client gave no address
        direct: dict[str, tuple[list[list[Any]], list[Any]]] = {}
        store = self.store
        out_bytes = 0  # a slice's results past CHUNK_THRESHOLD end it: one big value a message
        while self.queue:
            key, path, frames, reply, tid, inputs, skey = self.queue.popleft()
            started = time.perf_counter()
            ok, result, value = self._run(path, frames, inputs, reply, tid)
            now = time.perf_counter()
            seconds = round(now - started, 6)
            self.ran += 1
            # Kept for the tasks that take it (an error too: a task run under a lease
            # has no record in the master, which keeps the others' errors).
            store[skey] = kept = value if ok else Failed(result)
            if self.awaiting:
                self._made(skey, kept)
            nbytes = sum(map(len, result))
            if reply:
                header, out = direct.get(reply) or direct.setdefault(reply, ([], []))
                header.append([tid, ok, len(result)])
                out.extend(result)
                if key is DIRECT:
                    self._direct_unreported += 1
                    self._direct_failed += not ok
                elif ok:
                    done.append([key, ok, 0, seconds, nbytes])
                else:  # the master keeps errors, for the tasks that take this one's result
                    done.append([key, ok, len(result), seconds, nbytes])
                    via_master.extend(result)
            else:
                done.append([key, ok, len(result), seconds, nbytes])
                via_master.extend(result)
            out_bytes += sum(map(len, result))
            if now > deadline or out_bytes > CHUNK_THRESHOLD:
                break
        for reply, (header, out) in direct.items():
            self._send_to_client(reply, P.FN_RESULT, {"results": header}, out)
        self._unreported += done
        # Tasks under leases alone are not reported now: their count rides later.
        if via_master or (
            self._unreported
            and (not self.queue or len(self._unreported) + len(self.queue) >= self.window // 2)
        ):
            self._report(via_master)
        elif self._unreported and self._report_timer is None:
            self._report_timer = self.reactor.call_later(DONE_DELAY, self._report)
        if self.queue and not self._scheduled:
            self._scheduled = True
            self.reactor.call_later(0, self._next_slice)

    def _next_slice(self) -> None:
        """Go on with the queue, once what the master sent meanwhile is read: a steal or
        a cancel then takes what has not started, even behind a long task (reading runs
        the next slice, ``_after_read``)."""
        self._scheduled = False
        self.channel.read_pending()
        if self.queue and not self._scheduled:
            self.run_slice()

    def _report(self, frames: list[Any] | None = None) -> None:
        if self._report_timer is not None:
            self._report_timer.cancel()
            self._report_timer = None
        if (self._unreported or self._direct_unreported) and not self.closed:
            body: dict[str, Any] = {
                "results": self._unreported,
                "direct": self._direct_unreported,
            }
            if self._direct_failed:
                body["direct_failed"] = self._direct_failed
            if self.store.over_limit:
                body["over"] = True
            self._unreported, self._direct_unreported, self._direct_failed = [], 0, 0
            self.channel.notify(P.FN_DONE, body, frames=frames or [])

    def _send_to_client(self, reply: str, op: str, body: dict[str, Any], frames: list[Any]) -> None:
        """``reply`` is ``endpoint#token``: the token proves to the client that the
        message comes from a worker its task was given to."""
        addr, _, token = reply.partition("#")
        entry = self.replies.get(addr)
        # Unbounded queue: a client never has more results due than its own
        # max_inflight, and a result must not be dropped.
        sock = (
            entry[0]
            if entry is not None
            else make_socket(zmq.PUSH, connect=addr, sndhwm=0, server_role="client")
        )
        self.replies[addr] = (sock, time.monotonic())
        if len(self.replies) > MAX_REPLY_SOCKETS:  # a client naming ever new addresses
            oldest = min(self.replies, key=lambda a: self.replies[a][1])
            evicted = self.replies.pop(oldest)[0]
            self.big_out.drop(evicted)
            close_socket(evicted)
        body["token"] = token
        parts = [encode(Kind.EVENT, op, 0, body), *frames]
        if is_big(parts):
            self.big_out.send(sock, parts)
            self._pump_results()
        else:
            sock.send_multipart(parts, copy=False)

    def _pump_results(self) -> None:
        """Results in chunks: send what the windows allow, again shortly while any wait."""
        self._pump_timer = None
        if self.big_out.pump() and not self.closed:
            self._pump_timer = self.reactor.call_later(PUMP_INTERVAL, self._pump_results)

    def _close_idle_replies(self) -> None:
        now = time.monotonic()
        for reply, (sock, last_used) in list(self.replies.items()):
            if now - last_used > REPLY_IDLE_CLOSE:
                self.big_out.drop(sock)
                close_socket(sock)
                del self.replies[reply]

    def _run(
        self, path: str, frames: list[Any], inputs: list[Any] | None, reply: str, tid: int
    ) -> tuple[bool, list[Any], Any]:
        """``_run_one``, with what it prints forwarded to a client that asked for it."""
        if self.output is None or not wants_output(reply):
            return self._run_one(path, frames, inputs)

        def send(body: dict[str, Any]) -> None:
            self._send_to_client(reply, P.FN_OUTPUT, body, [])

        self.output.begin(send, tid, path)
        try:
            return self._run_one(path, frames, inputs)
        finally:
            self.output.end()

    def _run_one(
        self, path: str, frames: list[Any], inputs: list[Any] | None = None
    ) -> tuple[bool, list[Any], Any]:
        if inputs is not None:
            for value in inputs:
                if isinstance(value, Failed):  # an input failed: so does this task
                    return False, value.frames, None
        try:
            if path == PICKLE_REFUSED_BY_MASTER:
                raise PermissionError("the master does not accept pickled functions")
            if path == P.PICKLED_FN:
                fn = self._unpickle(frames[0])
                frames = frames[1:]
                if self.output is not None:
                    self.output.relabel(fn)  # its lines are named by the function
            else:
                fn = resolve_function(path, self.functions)
            args, kwargs = unpack(frames) if inputs is None else unpack(frames, inputs.__getitem__)
            value = fn(*args, **kwargs)
            out = pack(value)
            size = sum(map(len, out))
            if size > self.max_value_bytes:
                raise ValueError(
                    f"the result of {size} bytes is over the cluster's limit of "
                    f"{self.max_value_bytes} bytes (max-value-bytes)"
                )
            return True, out, value
        except Exception as exc:
            return False, pack(describe_exception(exc)), None

    def _unpickle(self, frame: Any) -> Any:
        if not self.allow_pickle:
            raise PermissionError(
                f"executor {self.executor_id} does not accept pickled functions "
                "(its allow-pickle is false)"
            )
        data = frame.bytes if hasattr(frame, "bytes") else bytes(frame)
        digest = "!" + hashlib.blake2b(data, digest_size=16).hexdigest()
        fn = self.functions.get(digest)
        if fn is None:
            import cloudpickle  # only where pickles are allowed

            if len(self.functions) > MAX_PICKLED_CACHE:
                self.functions = {k: v for k, v in self.functions.items() if k[0] != "!"}
            fn = self.functions[digest] = cloudpickle.loads(data)
        return fn
