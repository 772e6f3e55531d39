"""A future made before a master failover, used as an input after it: the task fails
with an error that says exactly that (docs/graphs.md, "Not done yet")."""

from __future__ import annotations

import pytest

import zdf
from zdf.errors import ZdfError
from zdf.jobs import examples
from zdf.localcluster import LocalCluster, wait_until

pytestmark = [pytest.mark.timeout(90), pytest.mark.cluster(masters=2)]


def test_a_future_from_before_a_failover_fails_its_dependent_saying_why(
    cluster: LocalCluster,
) -> None:
    leader = wait_until(cluster.leader, 10, "a leader")
    with zdf.connect(cluster.master_addr, timeout=10.0) as client:
        before = client.submit(examples.add, 1, 2)
        assert before.result(10) == 3
        fresh = client.submit(examples.add, before, 1)  # fine on the first master
        assert fresh.result(10) == 4
        cluster.kill(leader)
        new_leader = wait_until(cluster.leader, 10, "a new leader")
        assert new_leader is not leader
        dependent = client.submit(examples.add, before, 10)
        with pytest.raises(ZdfError) as info:
            dependent.result(30)
        message = str(info.value)
        assert "no such future" in message and "master failover" in message, message
        assert "submit again the task that made it" in message
        after = client.submit(examples.add, 5, 5)
        assert client.submit(examples.add, after, 1).result(30) == 11  # new futures work
