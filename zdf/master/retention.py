"""Ended jobs are forgotten: ``zdf job delete JOB`` at once, any of them after ``job-retention``.

Theory of operation: a job that ended (finished, failed or canceled) is of no
use to the scheduler, only to people reading ``job list``. ``JobRetention``
deletes its record from the metastore (fenced: a deposed master cannot delete
what the new one keeps) and then from memory; a job still pending or running
is refused (cancel it first). A sweep every ``SWEEP_INTERVAL`` forgets every
job that ended more than ``job-retention`` seconds ago; 0 keeps them forever.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from zdf import protocol as P
from zdf.errors import JobError, ZdfError
from zdf.master.election import LostLeadership
from zdf.master.jobs import JobManager
from zdf.master.persist import FrameworkStore
from zdf.master.states import TERMINAL_JOB_STATES
from zdf.observe.logs import task_fields
from zdf.wire.rpc import Call

log = logging.getLogger(__name__)

SWEEP_INTERVAL = 60.0


class JobRetention:
    def __init__(
        self,
        jobs: JobManager,
        store: FrameworkStore | None,
        retention: float,
        fenced: Callable[..., None],
    ) -> None:
        self.jobs = jobs
        self.store = store
        self.retention = retention
        self.fenced = fenced  # the master's: a refused write makes it step down
        self.deleted = 0

    def handlers(self) -> dict[str, Callable[[Call], Any]]:
        return {P.JOB_DELETE: self.on_job_delete}

    def on_job_delete(self, call: Call) -> Any:
        body = P.fields(call.body, job_id=str)
        job = self.jobs.get(body["job_id"])
        if job.state not in TERMINAL_JOB_STATES:
            raise JobError(
                f"job {job.job_id} is {job.state.value}: cancel it first (zdf job cancel)"
            )
        self._delete(job.job_id, fenced=True)
        return {"id": job.job_id, "deleted": True}

    def sweep(self, now: float | None = None) -> list[str]:
        """Forget the jobs that ended more than ``retention`` seconds ago."""
        if self.retention <= 0:
            return []
        now = time.time() if now is None else now
        old = [
            job.job_id
            for job in self.jobs.jobs.values()
            if job.state in TERMINAL_JOB_STATES
            and now - (job.finished_at or job.submitted_at) > self.retention
        ]
        done = []
        for job_id in old:
            try:
                self._delete(job_id, fenced=False)
            except LostLeadership:
                raise
            except ZdfError as exc:
                log.warning("could not forget job %s yet: %s", job_id, exc)
                break
            done.append(job_id)
        return done

    def _delete(self, job_id: str, fenced: bool) -> None:
        if self.store is not None:
            if fenced:
                self.fenced(self.store.delete_job, job_id)
            else:
                self.store.delete_job(job_id)
        self.jobs.forget(job_id)
        self.deleted += 1
        log.info("job %s forgotten", job_id, extra=task_fields(job_id))
