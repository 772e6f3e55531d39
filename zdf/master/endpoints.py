"""The master's endpoint directory: where the tasks of running jobs listen.

Theory of operation: a task publishes its ports (and, as it finishes, its done
flag) through its executor; ``Master.on_publish_endpoint`` checks the attempt
and the executor (a zombie's late publish must not redirect its peers), records
the address in the metastore, then hands it to ``record`` here. The directory
keeps one table per job, ``(task, name) -> address``, rebuilt from the metastore
when a master takes over (``restore``).

Executors learn the addresses three ways:

* a start command carries its job's table (``as_list``), so a task starts with
  every address known so far;
* the changes of one reactor turn go to each executor holding tasks of the job
  as one ``endpoints`` update per job (``record``, ``announce_done``): a 1,000-table
  job's producers publish their ports, then their done flags, in bursts of hundreds;
* an executor that (re)registers is sent the whole table of every job it runs
  tasks of (``push_to``): updates broadcast while it was away, or before it
  registered with a new leader, would be lost otherwise.

A finished task's done flag is also derived from its state (``announce_done``,
``known``): the task's own notice can be lost in a master failover, its
(reliably delivered) final report cannot, and a task waiting for its downstream
to be done must not wait forever. Batch jobs' tasks have no peers: no tables.
"""

from __future__ import annotations

from collections.abc import Callable

from zdf import protocol as P
from zdf.master.jobs import JobManager, JobRecord
from zdf.master.states import TERMINAL_JOB_STATES, TaskState
from zdf.wire.reactor import Reactor
from zdf.wire.rpc import Channel

DONE_FLAG = "done"
"""The endpoint name of a task's done flag (``zdf.runtime.operator.DONE``)."""

Table = dict[tuple[str, str], str]


class EndpointDirectory:
    def __init__(
        self,
        reactor: Reactor,
        channel: Channel,
        jobs: JobManager,
        peer_of: Callable[[str], bytes | None],
    ) -> None:
        self.reactor = reactor
        self.channel = channel
        self.jobs = jobs
        self._peer_of = peer_of  # an executor's connection, if it is registered
        self.tables: dict[str, Table] = {}
        self._news: dict[str, Table] = {}  # changes not yet sent (``_send_news``)

    def restore(self, entries: dict[tuple[str, str, str], str]) -> None:
        for (job_id, task_id, name), addr in entries.items():
            self.tables.setdefault(job_id, {})[(task_id, name)] = addr

    def forget(self, job_id: str) -> None:
        self.tables.pop(job_id, None)

    def known(self, job: JobRecord) -> Table:
        """Published endpoints plus the done flags of finished tasks."""
        known = dict(self.tables.get(job.job_id, {}))
        if job.spec.gang and job.state_counts[TaskState.FINISHED]:
            for task in job.tasks.values():
                if task.state is TaskState.FINISHED:
                    known[(task.task_id, DONE_FLAG)] = str(task.attempt)
        return known

    def as_list(self, job_id: str) -> list[list[str]]:
        """The job's table as a start command carries it (none for a batch job)."""
        job = self.jobs.jobs.get(job_id)
        known = self.known(job) if job is not None and job.spec.gang else {}
        return [[t, n, a] for (t, n), a in known.items()]

    def record(self, job_id: str, task_id: str, name: str, addr: str) -> None:
        """A published address, recorded in the metastore: kept and sent on."""
        if job_id in self.jobs.jobs:
            self.tables.setdefault(job_id, {})[(task_id, name)] = addr
            self._broadcast(job_id, task_id, name, addr)

    def announce_done(self, job_id: str, task_id: str, attempt: int) -> None:
        """A finished task's done flag, from its final report (module docstring)."""
        table = self.tables.setdefault(job_id, {})
        if table.get((task_id, DONE_FLAG)) == str(attempt):
            return
        table[(task_id, DONE_FLAG)] = str(attempt)
        self._broadcast(job_id, task_id, DONE_FLAG, str(attempt))

    def push_to(self, executor_id: str) -> None:
        """Send a (re)registered executor the tables of the jobs it runs tasks of;
        workers ignore the addresses they already have."""
        peer = self._peer_of(executor_id)
        if peer is None:
            return
        for job in self.jobs.jobs.values():
            if job.state in TERMINAL_JOB_STATES:
                continue
            if any(executor == executor_id for executor, _ in job.held.values()):
                known = self.known(job)
                update = {
                    "job_id": job.job_id,
                    "endpoints": [[t, n, a] for (t, n), a in known.items()],
                }
                self.channel.notify(P.ENDPOINTS, update, peer=peer)

    def _broadcast(self, job_id: str, task_id: str, name: str, addr: str) -> None:
        """Tell the job's executors at the end of this turn, one update per job."""
        if not self._news:  # the first change of this turn
            self.reactor.call_later(0.0, self._send_news)
        news = self._news.setdefault(job_id, {})
        news.pop((task_id, name), None)  # the latest change last
        news[(task_id, name)] = addr

    def _send_news(self) -> None:
        news, self._news = self._news, {}
        for job_id, changes in news.items():
            job = self.jobs.jobs.get(job_id)
            if job is None:
                continue
            update = {"job_id": job_id, "endpoints": [[t, n, a] for (t, n), a in changes.items()]}
            for executor_id in {executor for executor, _ in job.held.values()}:
                peer = self._peer_of(executor_id)
                if peer is not None:
                    self.channel.notify(P.ENDPOINTS, update, peer=peer)
