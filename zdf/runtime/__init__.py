"""The dataflow runtime: operators, data pipes and the hosts that run them.

A host (an executor's worker process, ``zdf.runtime.local``,
``zdf.runtime.multiproc``) implements ``TaskContext`` and calls::

    try:
        handle = launch(ctx, spec)        # imports spec.operator, restore(), open()
    except JobError as exc:               # import/construct/open failed; nothing left open
        report the task failed with str(exc)
    ...                                   # run ctx.reactor; the task reports through ctx
    handle.cancel()                       # after it reported (or to stop it): closes every
                                          # socket and timer it made; idempotent

Modules: ``context`` (the host interface), ``operator`` (the base class and its
resource tracking), ``stream`` (one-input/one-output operators), ``pipe``
(credit-based batch pipes), ``link`` (control links between tasks),
``batches`` (numpy helpers), ``launch``; ``bench`` holds the benchmark job's
operators.
"""

from zdf.runtime.context import TaskContext
from zdf.runtime.launch import TaskHandle, launch, load_operator
from zdf.runtime.operator import Operator
from zdf.runtime.stream import StreamOperator

__all__ = ["Operator", "StreamOperator", "TaskContext", "TaskHandle", "launch", "load_operator"]
