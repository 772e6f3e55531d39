"""The benchmark job's record format (DESIGN.md: "The benchmark job").

A record is ``(tp, schema_ver, tid, gtid, pk, ts)``: ``tp`` is DATA or DDL, ``tid``
the table, ``gtid`` the position in its binlog stream, ``pk`` the primary key (for a
DDL, the pk it precedes), ``ts`` the produce time in ns. Sinks store each record
followed by the time they wrote it (``SINK_DTYPE``).
"""

from __future__ import annotations

import numpy as np

DATA = 0
DDL = 1

RECORD_DTYPE = np.dtype(
    [
        ("tp", "<i4"),
        ("schema_ver", "<i4"),
        ("tid", "<i4"),
        ("gtid", "<i8"),
        ("pk", "<i8"),
        ("ts", "<i8"),
    ]
)

SINK_DTYPE = np.dtype([*RECORD_DTYPE.descr, ("sink_ts", "<i8")])
