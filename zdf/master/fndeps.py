"""Task graphs in the master: inputs, where results are, what may be dropped, lineage.

Theory of operation. A client turns each ``Future`` among a task's arguments
into a reference (``zdf.wire.payload``) and names the futures in the task's
``deps`` option, in order: a client task id, or ``[tid, lease, worker]`` for a
task that ran under a lease. The master keeps a *record* of every result whose
future a client may still use: the ``FnTask`` itself, once done, in ``done``
under ``(client, tid)``, with the workers holding the value (``holders``: the
worker that made it, or that a scattered value was put on), its size as packed
(``nbytes``), its error if it failed, and its own inputs and frames (its
lineage).

A task with inputs waits here, not in the queue, until every input is ready;
then it goes to the worker holding the most of its input bytes when that worker
can start it now (the placement rule: no task waits behind another while a
worker idles), else to the queue like any task, and the worker it lands on
fetches what it lacks from the holders (``zdf.executor.objtransfer``). Each
``fn_run`` entry of such a task names, per input, its store key, the store
ports of its holders and its size. An input that failed fails the task with
that very error (its type and remote traceback reach the client), and so on
down the graph.

Pipelining (as Dask's workers do). A task whose inputs are not all made, but
each of which is on a worker already (running, queued there, or itself sent
ahead), is sent at once to the worker that will hold most of them
(``pipeline``): it waits there, its missing inputs named without holders, and
starts as soon as they are in that worker's store; an input made on another
worker is announced to it by ``fn_ready`` (its holder's store port), sent
when that holder reports it done, and fetched. So a chain of tasks costs no
master round trip per task. A worker has at most ``depth`` such tasks; more
wait here (``blocked``) until it reports progress. Such a task counts as
neither load nor flight on its worker (``FnWorker.pipelined``) until the
master knows its inputs are made (``promote``); it is never stolen for an
idle worker (it could not start there sooner). If an input fails, the master
fails the task with that error and its worker forgets it (``fn_forget``); if
its worker dies, it waits here again without spending a retry; a cancel
withdraws it like any task not started. It holds its inputs' references
(``refs``) from submission to its end, as any task with inputs. A task asking
for resources, or one that would pass queued tasks of a higher priority, is
not sent ahead.

References. A record lives while its client holds the future (until
``fn_release``, sent when the future is released or garbage-collected) or a
pending task takes it as an input (``refs``); then the master drops it and
tells its holders (``fn_drop``). A future released before its task ends has
the value dropped as soon as it is made (unless a task takes it).

Lineage. When a worker dies, its records lose it as a holder; one left with no
holder is *lost*. A lost record that a pending task needs runs again from its
task (its inputs first, recursively, if they are lost too), one retry less;
one only the client holds runs again if and when a task asks for it. A task
on a live worker whose input is lost is taken back (``fn_steal``) and waits
again. A record that cannot run again (no retries left, a value scattered by a
client, a task run under a lease) fails the tasks that need it with a
``WorkerLost`` error.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from zdf import protocol as P
from zdf.errors import ProtocolError, ZdfError, worker_lost
from zdf.wire.payload import pack
from zdf.wire.rpc import DEFER, Call

if TYPE_CHECKING:
    from zdf.master.fnqueue import FnTask, FnWorker, FunctionQueue

log = logging.getLogger(__name__)

PENDING, READY, FAILED, LOST = "pending", "ready", "failed", "lost"
DEFAULT_PIPELINE_DEPTH = 64  # tasks a worker may have waiting ahead of their inputs


def store_key(record: FnTask) -> Any:
    """Where its worker keeps a record's value: the task key unless named otherwise."""
    return record.key if record.skey is None else record.skey


def error_frames(type_name: str, message: str) -> list[Any]:
    return pack({"type": type_name, "module": "zdf.errors", "message": message, "traceback": ""})


class Dependencies:
    def __init__(self, queue: FunctionQueue) -> None:
        self.q = queue
        self.done: dict[tuple[bytes, int], FnTask] = {}  # results a future may still use
        self.storing: dict[str, FnTask] = {}  # store key of a scattered value: its record
        self.stats = {"recomputed": 0, "dropped": 0, "scattered": 0, "waiting": 0, "pipelined": 0}
        self.scatters: list[Call] = []  # asked before any worker said hello: answered then
        self.depth = DEFAULT_PIPELINE_DEPTH  # 0: no task is sent ahead of its inputs
        # Tasks that would have gone ahead to a worker that had ``depth`` waiting already:
        # tried again when it reports progress.
        self.blocked: dict[bytes, list[FnTask]] = {}
        self._notes: dict[bytes, list[list[Any]]] = {}  # fn_ready per worker, not sent yet
        self._assigned: list[FnTask] | None = None  # tasks just sent that others wait for
        self.epoch = 0  # from when this master leads (0: no election, no failover)
        self.previous = ""  # the master that led before it, where it saw one

    # -- admission ------------------------------------------------------------
    def admit(self, task: FnTask, deps: Any) -> None:
        """A task submitted with inputs: wait for them (or place it, all ready)."""
        if not isinstance(deps, list) or not deps:
            raise ProtocolError("option 'deps' is not a list of inputs")
        inputs: list[FnTask] = []
        for dep in deps:
            record = self._record(task.client, dep)
            if record is None:
                self.q.by_client[(task.client, task.tid)] = task
                self.fail(task, error_frames("ZdfError", f"input {dep!r}: {self._unknown()}"))
                return
            inputs.append(record)
        task.inputs = inputs
        for record in inputs:
            record.refs += 1
        self.q.by_client[(task.client, task.tid)] = task
        self.wait(task)

    def took_over(self, epoch: int, previous: str) -> None:
        """This master leads from ``epoch`` (after ``previous``, if it saw one lead)."""
        self.epoch, self.previous = epoch, previous

    def _unknown(self) -> str:
        if not self.epoch:
            return "no such future (released, or of another client)"
        failover = (
            f"made before this master took over from {self.previous} (epoch {self.epoch})"
            if self.previous
            else f"made before a master failover (this master leads from epoch {self.epoch})"
        )
        return (
            f"no such future: it was {failover}, or released, or is another client's. Results "
            "made before a master failover are not carried over (the new master has no "
            "record of them, and the workers dropped them): submit again the task that made it"
        )

    def _record(self, client: bytes, dep: Any) -> FnTask | None:
        if isinstance(dep, int):
            return self.done.get((client, dep)) or self.q.by_client.get((client, dep))
        if not (isinstance(dep, list) and len(dep) == 3 and isinstance(dep[0], int)):
            raise ProtocolError("an input is a task id or [tid, lease, worker]")
        tid, lease, addr = dep
        record = self.done.get((client, tid))
        if record is None:  # a task run under a lease: its worker keeps it as lease:tid
            holder = self._worker_at(addr)
            if holder is None:
                return None
            record = self.q.record(client, tid, f"{lease}:{tid}", [holder.peer], READY)
            self.done[(client, tid)] = record
        return record

    def _worker_at(self, direct: Any) -> FnWorker | None:
        for worker in self.q.workers.values():
            if worker.direct == direct:
                return worker
        return None

    def wait(self, task: FnTask) -> None:
        """Count the inputs of ``task`` not ready yet; place it when none is left."""
        missing = 0
        assert task.inputs is not None
        for record in task.inputs:
            if record.state == LOST:
                self.recompute(record)  # or it fails now
            if record.state == FAILED:
                self.fail(task, record.error or [])
                return
            if record.state != READY:
                if record.waiters is None:
                    record.waiters = []
                record.waiters.append(task)
                missing += 1
        task.missing = missing
        task.state = PENDING
        if missing:
            self.stats["waiting"] += 1
            self.pipeline(task)
        else:
            self.ready(task)

    def ready(self, task: FnTask) -> None:
        if task.worker is not None:  # sent ahead: its worker runs it now
            self.q.promote(task)
            return
        if (task.client, task.tid) not in self.q.by_client:  # canceled while it waited
            self._unref_inputs(task)
            task.state = FAILED
            task.error = error_frames("CancelledError", "an input's task was canceled")
            self._wake(task)
            return
        self.q.place_ready(task, self._best_holder(task))

    def _best_holder(self, task: FnTask) -> FnWorker | None:
        """The live worker holding the most of ``task``'s input bytes (not over its limit)."""
        weights: dict[bytes, int] = {}
        for record in task.inputs or ():
            for peer in record.holders:
                weights[peer] = weights.get(peer, 0) + record.nbytes + 1
        best = None
        for peer, _ in sorted(weights.items(), key=lambda kv: -kv[1]):
            worker = self.q.workers.get(peer)
            if worker is not None and not worker.over_limit:
                best = worker
                break
        return best

    def input_specs(self, task: FnTask) -> list[list[Any]]:
        """``fn_run``'s inputs of ``task``: ``[store key, holders' store ports, nbytes]``;
        ports None for an input not made yet (made on that worker, or told by ``fn_ready``)."""
        workers = self.q.workers
        specs = []
        for record in task.inputs or ():
            if record.state != READY:
                specs.append([store_key(record), None, 0])
                continue
            ports = [workers[p].store for p in record.holders if p in workers]
            specs.append([store_key(record), ports, record.nbytes])
        return specs

    # -- pipelining: a task sent ahead of its inputs ------------------------------
    def pipeline(self, task: FnTask) -> None:
        """Send ``task`` to the worker that will hold its inputs before they are made, when
        every input not made yet is on a worker already (a chain then costs no master round
        trip per task). Not for a task asking for resources, nor one that would pass
        queued tasks of a higher priority."""
        q = self.q
        if self.depth <= 0 or task.demand is not None or task.worker is not None:
            return
        if (task.client, task.tid) not in q.by_client:
            return  # canceled while it waited: it fails once its inputs are made (``ready``)
        if q.queue and q.queue.peek().priority > task.priority:
            return
        weights: dict[bytes, int] = {}
        for record in task.inputs or ():
            if record.state == READY:
                for peer in record.holders:
                    weights[peer] = weights.get(peer, 0) + record.nbytes + 1
            elif record.worker is not None:  # on a worker (or sent ahead to one)
                weights[record.worker] = weights.get(record.worker, 0) + record.nbytes + 1
            else:
                return  # an input waits itself: this one follows it once it is placed
        target = None
        for peer, _ in sorted(weights.items(), key=lambda kv: -kv[1]):
            worker = q.workers.get(peer)
            if worker is not None and not worker.over_limit:
                target = worker
                break
        if target is None or not q.executor_alive(target.executor_id):
            return
        if len(target.pipelined) >= self.depth:
            self.blocked.setdefault(target.peer, []).append(task)
            return
        self.stats["pipelined"] += 1
        q.send_ahead(target, task)

    def assigned(self, record: FnTask) -> None:
        """``record`` was sent to a worker: the tasks waiting for it may follow it (done
        in a loop, not recursively: a chain follows its head task by task)."""
        if self._assigned is not None:
            self._assigned.append(record)
            return
        self._assigned = todo = [record]
        try:
            while todo:
                for task in todo.pop().waiters or ():
                    if task.state == PENDING and task.worker is None:
                        self.pipeline(task)
        finally:
            self._assigned = None

    def unblock(self, peer: bytes) -> None:
        """``peer`` reported progress: the tasks that waited for room there go ahead."""
        tasks = self.blocked.pop(peer, None)
        for task in tasks or ():
            if task.state == PENDING and task.worker is None and task.missing:
                self.pipeline(task)

    def send_notes(self) -> None:
        """``fn_ready``: where inputs of tasks sent ahead were made, one message per worker."""
        notes, self._notes = self._notes, {}
        for peer, inputs in notes.items():
            if peer in self.q.workers:
                self.q.channel.notify(P.FN_READY, {"inputs": inputs}, peer=peer)

    def _unwait(self, task: FnTask) -> None:
        """``task`` no longer waits for its inputs (it waits anew, or never will)."""
        for record in task.inputs or ():
            if record.waiters and task in record.waiters:
                record.waiters.remove(task)
        task.missing = 0

    def canceled(self, task: FnTask) -> None:
        """``task`` was withdrawn from its worker for a cancel: its inputs are let go, and
        the tasks that take it fail."""
        self._unwait(task)
        self._unref_inputs(task)
        task.state = FAILED
        task.error = error_frames("CancelledError", "an input's task was canceled")
        self._wake(task)

    # -- results ---------------------------------------------------------------
    def finished(
        self,
        task: FnTask,
        peer: bytes,
        ok: bool,
        nbytes: int,
        error: Any,
        drops: dict[bytes, list[Any]],
    ) -> None:
        """``task`` ran on ``peer``: keep its record while something refers to it (a drop
        of a value no one wants goes in ``drops``, sent once per report)."""
        task.holders = [peer]
        task.nbytes = nbytes
        if ok:
            task.state = READY
            holder = self.q.workers.get(peer)
            for waiter in task.waiters or ():
                if waiter.worker is not None and waiter.worker != peer and holder is not None:
                    spec = [store_key(task), [holder.store], nbytes]  # sent ahead elsewhere
                    self._notes.setdefault(waiter.worker, []).append(spec)
        else:
            task.state = FAILED
            task.error = list(error) if error else []
        if task.inputs is not None:
            self._unref_inputs(task)
        if task.waiters is not None:
            self._wake(task)
        self._keep_or_drop(task, drops)

    def fail(self, task: FnTask, error: list[Any]) -> None:
        """``task`` cannot run (an input failed or is gone): answer its client with
        ``error``, and every task waiting for it the same."""
        if task.worker is not None:  # sent ahead of its inputs: its worker drops it
            self.q.withdraw(task)
        task.state = FAILED
        task.error = error
        if task.inputs is not None:
            self._unwait(task)
            self._unref_inputs(task)
        if self.q.by_client.pop((task.client, task.tid), None) is not None and task.client:
            self.q.send_results(task.client, [(task.tid, False, error)])
        self._wake(task)
        self._keep_or_drop(task)

    def _wake(self, record: FnTask) -> None:
        waiters, record.waiters = record.waiters, None
        for task in waiters or ():
            if task.state != PENDING:
                continue  # failed through another input already
            if record.state == FAILED:
                self.fail(task, record.error or [])
                continue
            task.missing -= 1
            if task.missing == 0:
                self.ready(task)

    def _unref_inputs(self, task: FnTask) -> None:
        for record in task.inputs or ():
            record.refs -= 1
            if record.refs <= 0 and record.released:
                self._drop(record)

    def _keep_or_drop(self, record: FnTask, drops: dict[bytes, list[Any]] | None = None) -> None:
        if (record.released or not record.client) and record.refs <= 0 and not record.waiters:
            self._drop(record, drops)
        else:
            self.done[(record.client, record.tid)] = record

    # -- references --------------------------------------------------------------
    def release(self, client: bytes, body: Any) -> None:
        """``fn_release``: ``{"tids": [...], "leased": [[tid, lease, worker], ...]}``."""
        tids = body.get("tids") or []
        leased = body.get("leased") or []
        if not isinstance(tids, list) or not isinstance(leased, list):
            raise ProtocolError("fn_release: tids and leased are lists")
        drops: dict[bytes, list[Any]] = {}
        for tid in tids:
            self._release(client, tid, drops)
        for entry in leased:
            if not (isinstance(entry, list) and len(entry) == 3):
                continue
            tid, lease, addr = entry
            if (client, tid) in self.done:
                self._release(client, tid, drops)
                continue
            holder = self._worker_at(addr)
            if holder is not None:
                drops.setdefault(holder.peer, []).append(f"{lease}:{tid}")
        self._send_drops(drops)

    def release_all(self, client: bytes) -> int:
        """``client`` is gone (``zdf.master.fnsessions``): release every future it had,
        done or pending; how many."""
        tids = [tid for c, tid in self.done if c == client]
        tids += [tid for c, tid in self.q.by_client if c == client and (c, tid) not in self.done]
        drops: dict[bytes, list[Any]] = {}
        for tid in tids:
            self._release(client, tid, drops)
        self._send_drops(drops)
        return len(tids)

    def _release(self, client: bytes, tid: Any, drops: dict[bytes, list[Any]]) -> None:
        record = self.done.get((client, tid))
        if record is None:
            pending = self.q.by_client.get((client, tid))
            if pending is not None:
                pending.released = True  # its value is dropped once made
            return
        record.released = True
        if record.refs <= 0 and not record.waiters:
            self._drop(record, drops)

    def _drop(self, record: FnTask, drops: dict[bytes, list[Any]] | None = None) -> None:
        self.done.pop((record.client, record.tid), None)
        if isinstance(record.skey, str):
            self.storing.pop(record.skey, None)
        self.stats["dropped"] += 1
        # Its task stays with the records that took it as an input (their lineage): if
        # they are lost, it runs again first.
        if record.state == READY:
            record.state = LOST
        if not record.holders:
            return
        holders, record.holders = record.holders, []
        skey = store_key(record)
        if drops is None:
            self._send_drops({peer: [skey] for peer in holders})
        else:
            for peer in holders:
                drops.setdefault(peer, []).append(skey)

    def _send_drops(self, drops: dict[bytes, list[Any]]) -> None:
        for peer, keys in drops.items():
            if peer in self.q.workers:
                self.q.channel.notify(P.FN_DROP, {"keys": keys}, peer=peer)

    # -- scatter -------------------------------------------------------------------
    def on_scatter(self, call: Call) -> Any:
        """``fn_scatter`` (a request): answered once a worker can take the values."""
        if not self._scatter_targets():
            self.scatters.append(call)  # no worker yet (the cluster is starting)
            return DEFER
        return self.scatter(call.peer or b"", call.body)

    def workers_changed(self) -> None:
        """A worker said hello: scatters that waited for one are answered now."""
        waiting, self.scatters = self.scatters, []
        for call in waiting:
            try:
                call.reply(self.scatter(call.peer or b"", call.body))
            except ZdfError as exc:
                call.fail(exc)

    def _scatter_targets(self) -> list[FnWorker]:
        return [
            w
            for w in self.q.workers.values()
            if w.direct and w.store and self.q.executor_alive(w.executor_id)
        ]

    def scatter(self, client: bytes, body: Any) -> dict[str, Any]:
        """``fn_scatter``: ``{"tids": [...], "nbytes": [...], "broadcast": bool}``; answers
        where the client puts each value: ``{"puts": [[direct port, [[tid, key], ...]], ...]}``."""
        tids = P.fields(body, tids=list)["tids"]
        sizes = body.get("nbytes") or [0] * len(tids)
        if not isinstance(sizes, list) or len(sizes) != len(tids):
            raise ProtocolError("fn_scatter: nbytes does not match tids")
        targets = self._scatter_targets()
        if not targets:
            raise ZdfError("no worker to scatter to")
        targets.sort(key=lambda w: (w.over_limit, w.stored))
        puts: dict[bytes, list[list[Any]]] = {}
        for index, (tid, nbytes) in enumerate(zip(tids, sizes, strict=True)):
            if not isinstance(tid, int) or (client, tid) in self.done:
                raise ProtocolError("fn_scatter: bad or reused task id")
            record = self.q.record(client, tid, "", [], PENDING)
            record.skey = f"s{record.key}"
            record.nbytes = nbytes if isinstance(nbytes, int) else 0
            chosen = targets if body.get("broadcast") else [targets[index % len(targets)]]
            for worker in chosen:
                puts.setdefault(worker.peer, []).append([tid, record.skey])
                worker.stored += record.nbytes
            self.done[(client, tid)] = record
            self.storing[record.skey] = record
        self.stats["scattered"] += len(tids)
        return {"puts": [[self.q.workers[p].direct, entries] for p, entries in puts.items()]}

    def stored(self, peer: bytes, keys: Iterable[Any]) -> None:
        """``fn_stored``: the worker ``peer`` keeps these scattered values now."""
        for skey in keys:
            record = self.storing.get(skey) if isinstance(skey, str) else None
            if record is None:
                if peer in self.q.workers:  # released meanwhile
                    self.q.channel.notify(P.FN_DROP, {"keys": [skey]}, peer=peer)
                continue
            if peer not in record.holders:
                record.holders.append(peer)
            if record.state == PENDING:
                record.state = READY
                self._wake(record)

    # -- lineage ---------------------------------------------------------------------
    def holder_lost(self, peer: bytes) -> None:
        """The worker ``peer`` died: its values are gone. Needed ones are made again."""
        lost = []
        for record in list(self.done.values()):
            if peer in record.holders:
                record.holders.remove(peer)
                if not record.holders and record.state == READY:
                    record.state = LOST
                    lost.append(record)
        for record in lost:
            if record.refs > 0 or record.waiters:
                self.recompute(record)
        if lost:
            self._take_back_stranded(peer)

    def recompute(self, record: FnTask) -> bool:
        """Run a lost record's task again (its lost inputs too); False if it cannot."""
        if record.state != LOST:
            return record.state != FAILED
        if not record.fn or record.retries <= 0:
            record.state = FAILED
            record.error = pack(worker_lost(self._lost_for_good(record)))
            self._wake(record)
            return False
        record.retries -= 1
        self.stats["recomputed"] += 1
        log.info("recomputing task %d (%s): its result was lost", record.key, record.fn)
        self.q.by_client[(record.client, record.tid)] = record  # its answer is dropped
        if record.inputs is None:
            record.state = PENDING
            self.q.place_ready(record, None)
            return True
        for dep in record.inputs:
            dep.refs += 1
        self.wait(record)
        return True

    def _lost_for_good(self, record: FnTask) -> str:
        """One line on why a lost value cannot be made again."""
        if record.fn:
            return f"the result of task {record.tid} was lost with its worker (no retries left)"
        if isinstance(record.skey, str) and record.skey in self.storing:
            return (
                f"a value scattered by the client (future {record.tid}) was lost with its "
                "worker: scattered values are not made again (scatter with broadcast=True "
                "to keep a copy on every worker)"
            )
        return (
            f"the result of task {record.tid}, run under a lease, was lost with its worker: "
            "tasks run under a lease are not made again (the master never had them)"
        )

    def _take_back_stranded(self, peer: bytes) -> None:
        """Tasks sent to live workers whose inputs were only on ``peer``: back here."""
        steal: dict[bytes, list[int]] = {}
        for task in self.q.inflight.values():
            if task.inputs is None or task.worker is None or task.worker == peer:
                continue
            # An input it waits for is fine (told by fn_ready); one it counted as made is not.
            if any(
                record.state != READY and task not in (record.waiters or ())
                for record in task.inputs
            ):
                steal.setdefault(task.worker, []).append(task.key)
        for worker, keys in steal.items():
            self.q.channel.notify(P.FN_STEAL, {"keys": keys}, peer=worker)

    def again(self, task: FnTask, lost: Iterable[Any] = ()) -> None:
        """``task`` came back unstarted (stolen, its worker died, or it could not fetch
        ``lost``): wait for its inputs anew (recomputing those that are gone)."""
        lost_keys = set(lost)
        for record in task.inputs or ():
            if store_key(record) in lost_keys and record.state == READY:
                # No holder could hand it out: made again (a slow holder costs a rerun),
                # or failed if it cannot be.
                record.holders = []
                record.state = LOST
        self._unwait(task)  # it was sent ahead: it waits for what it lacks here again
        self.wait(task)

    def status(self) -> dict[str, Any]:
        return {**self.stats, "results": len(self.done)}
