"""The benchmark job's operators (DESIGN.md, "The benchmark job").

    producer-<t> ──► binlog-<s> ──► receive-<s> ──► syncer-<s> ──► sink-<s>
      (per table)     (per stream; every producer feeds every binlog)
                                                     ▲               │
                                          release    │               │ arrive / write / written
                                                     │               ▼
                                                    coordinator (one per job)

Who binds and who connects (every data link is a ``zdf.runtime.pipe`` credit
pipe: the sender binds a ROUTER, the receiver connects a DEALER and subscribes):

=============  ===========================  ===========================================
task           binds (published name)        connects to
=============  ===========================  ===========================================
producer-t     ``out`` (channel s = stream)  -
binlog-s       ``stream`` (one channel)      producer-t ``out`` channel s, for every t
receive-s      ``out``                       binlog-s ``stream`` (from a gtid)
syncer-s       ``out``                       receive-s ``out``; coordinator ``coord``
sink-s         -                             syncer-s ``out``; coordinator ``coord``
coordinator    ``coord`` (ROUTER Channel)    -
=============  ===========================  ===========================================

Control messages on ``coord`` are ``zdf.wire`` envelopes: ``hello {role, stream}``,
``arrive {stream, pairs}`` (sink), ``write {pairs}`` (to the writer sink),
``written {stream, pairs}`` (sink), ``release {pairs}`` (to every syncer),
``sink-done {stream, records, ddls, first_ts, last_ts, hist}`` (request, replied).

Output: ``<sink-dir>/<flow-id>/sink_<s>.bin`` (``SINK_DTYPE`` rows),
``summary_<s>.json`` per sink, and ``summary.json`` for the whole job, written
by the coordinator from the sinks' reports (their latency histograms merged).

See ``syncer`` for the DDL barrier and ``coordinator`` for its other half.
"""
