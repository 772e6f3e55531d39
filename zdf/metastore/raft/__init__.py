"""Raft-lite replication under the metastore's state machine.

``log`` (the log and hard state), ``messages`` (what replicas say to each other),
``core`` (the consensus rules, no I/O), ``transport`` (ZeroMQ between replicas)
and ``snapshot`` (sending and installing the state machine). The driver that ties
them to the state machine is ``zdf.metastore.replica``.
"""
