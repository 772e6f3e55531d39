"""Dataflow jobs of your own: a graph of operators over streams of numpy rows.

Build one in Python with ``Flow`` (or write a ``job-type = "dataflow"`` job file,
``zdf.dataflow.graph``), submit it with ``client.submit_job(flow)`` or
``zdf submit-job --config``. Operators subclass ``Source`` or ``Transform``
(``zdf.dataflow.operator``); the built-ins are in ``zdf.dataflow.builtin``.
"""

from zdf.dataflow.flow import Flow, Stream
from zdf.dataflow.operator import FlowOperator, Source, Transform

__all__ = ["Flow", "FlowOperator", "Source", "Stream", "Transform"]
