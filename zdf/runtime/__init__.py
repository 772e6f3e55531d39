"""The dataflow runtime: operators, data pipes and the hosts that run them.

A host (an executor's worker process, ``zdf.runtime.local``) implements
``TaskContext`` and calls ``launch(ctx, spec)``; the operator named by the spec
runs on the host's reactor until it reports finished or failed.
"""

from zdf.runtime.context import TaskContext
from zdf.runtime.launch import TaskHandle, launch, load_operator
from zdf.runtime.operator import Operator
from zdf.runtime.stream import StreamOperator

__all__ = ["Operator", "StreamOperator", "TaskContext", "TaskHandle", "launch", "load_operator"]
