"""The benchmark job's operators (DESIGN.md, "The benchmark job").

    producer-<t> ──► binlog-<s> ──► receive-<s> ──► syncer-<s> ──► sink-<s>
      (per table)     (per stream; every producer feeds every binlog)
                                                     │  ▲            │
                                          release    │  │   arrive / │ write / written
                                                     ▼  │            ▼
                                                    coordinator (one per job)

See ``syncer`` for the DDL barrier and ``coordinator`` for its other half.
"""
