"""The benchmark job's operators (DESIGN.md, "The benchmark job").

    producer-<t> ──► binlog-<s> ──► receive-<s> ──► syncer-<s> ──► sink-<s> ──► sink_<s>.bin
      (per table)     (per stream; every producer feeds every binlog)      ▲  │
                                                    arrive (to the writer) │  │ written (to all)
                                                                           │  ▼
                                                                  the other sinks

    coordinator: waits for every sink's done flag, merges their summaries

Who binds and who connects (every data link is a ``zdf.runtime.pipe`` credit
pipe: the sender binds a ROUTER, the receiver connects a DEALER and subscribes):

=============  ===========================  ===========================================
task           binds (published name)        connects to
=============  ===========================  ===========================================
producer-t     ``out`` (channel s = stream)  -
binlog-s       ``stream`` (one channel)      producer-t ``out`` channel s, for every t
receive-s      ``out``                       binlog-s ``stream`` (from a gtid)
syncer-s       ``out``                       receive-s ``out``
sink-s         ``barrier`` (ROUTER Channel)  syncer-s ``out``; every other sink's ``barrier``
coordinator    -                             - (watches the sinks' done flags)
=============  ===========================  ===========================================

Barrier messages between sinks are ``zdf.wire`` events, each sent on the
sender's link to the receiver's ``barrier``: ``hello {stream, attempt, written}``,
``arrive {stream, pairs}`` (to the DDLs' writer), ``written {stream, pairs}``
(from the writer to every other sink); ``pairs`` is ``[[table, version], ...]``.

Output: ``<sink-dir>/<flow-id>/sink_<s>.bin`` (``SINK_DTYPE`` rows),
``summary_<s>.json`` per sink, and ``summary.json`` for the whole job, written
by the coordinator from the sinks' summaries (their latency histograms merged).

See ``gate`` and ``barrier`` for the DDL barrier, ``sink`` for how they meet
the file, and ``syncer`` for why the gate is at the end of the chain.

Two sets of stage operators: ``stages`` and ``flowsink`` are the stages on the
public dataflow API (``zdf.dataflow``), which job files get (``zdf.jobs.benchflow``);
``producer``, ``binlog``, ``receive``, ``syncer`` and ``sink`` are the first,
hand-wired ones the table above describes (``engine="classic"``), kept for their
tests and for same-run comparisons. Both write the same files: the two sinks share
``sinkcore`` (file, gate, barrier, end), and the barrier talks over
``zdf.dataflow.peers``.
"""
