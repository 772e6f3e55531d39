"""The README's example package: a module of your own that function tasks call.

Put it on every executor (and the client) with ``PYTHONPATH=examples`` or
``pip install -e examples/`` (see the README, "Your own code on the executors")."""
