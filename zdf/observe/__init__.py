"""Observability: every process's HTTP endpoints, metrics, the master's dashboard, logs.

Theory of operation: a zdf process is one reactor thread, and nothing here may
slow it down. Each process with an ``http-addr`` runs a small threaded HTTP
server (``zdf.observe.server``) beside its reactor. A request that needs the
process's state asks the reactor for a plain snapshot through a ``LoopBridge``
(one wake-up of the loop per scrape, with a deadline); the HTTP thread turns the
snapshot into Prometheus metric families, JSON or HTML. Counters are never
updated on a hot path for the sake of metrics: the collectors read the counters
the processes keep anyway, at scrape time. The one exception is the
metastore's write latency histogram (``LatencyHistogram``), one bisect and one
increment per write.
"""
