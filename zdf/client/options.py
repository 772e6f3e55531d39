"""``client.options(...)``: zdf's own settings of a task, kept apart from the user's keywords.

``client.submit(fn, *args, **kwargs)`` hands every keyword to ``fn``, whatever
its name; how zdf runs the task (retries, resources, priority, a name) is set
on a view of the client instead, as Ray's ``.options()``::

    heavy = client.options(resources={"cpu": 2}, priority=10, retries=0)
    future = heavy.submit(train, data, retries=5)   # retries=5 goes to train()

A view has ``submit``, ``map`` and ``options`` (which refines it further); it
shares its client's connection and futures.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zdf.client.client import Client
    from zdf.client.futures import Future

_UNSET: Any = object()


@dataclass(frozen=True)
class TaskOptions:
    retries: int | None = None  # None: the client's default
    resources: Mapping[str, float] | None = None  # None: one cpu
    priority: int = 0  # higher runs first
    name: str = ""  # groups tasks whose durations are alike ("": the function path)

    def __post_init__(self) -> None:
        if self.retries is not None and (
            not isinstance(self.retries, int) or isinstance(self.retries, bool) or self.retries < 0
        ):
            raise ValueError("retries must be a non-negative integer")
        if not isinstance(self.priority, int) or isinstance(self.priority, bool):
            raise ValueError("priority must be an integer")
        if not isinstance(self.name, str):
            raise ValueError("name must be a string")
        if self.resources is not None and (
            not isinstance(self.resources, Mapping)
            or not all(
                isinstance(k, str)
                and isinstance(v, int | float)
                and not isinstance(v, bool)
                and v >= 0
                for k, v in self.resources.items()
            )
        ):
            raise ValueError('resources must map names to amounts, e.g. {"cpu": 2, "gpu": 1}')

    @cached_property
    def wire(self) -> dict[str, Any]:
        """What travels with each task (empty for the defaults); made once."""
        out: dict[str, Any] = {}
        if self.priority:
            out["priority"] = self.priority
        if self.resources is not None:
            out["resources"] = dict(self.resources)
        if self.name:
            out["name"] = self.name
        return out

    def merged(self, **changes: Any) -> TaskOptions:
        """These options with ``changes`` (a TypeError names an unknown option)."""
        return replace(self, **changes)


DEFAULT = TaskOptions()


class ClientView:
    """The client with options set (see the module docstring)."""

    def __init__(self, client: Client, options: TaskOptions) -> None:
        self._client = client
        self.task_options = options

    def options(
        self,
        *,
        retries: Any = _UNSET,
        resources: Any = _UNSET,
        priority: Any = _UNSET,
        name: Any = _UNSET,
    ) -> ClientView:
        """A view with these options changed as well."""
        given = {"retries": retries, "resources": resources, "priority": priority, "name": name}
        changes = {k: v for k, v in given.items() if v is not _UNSET}
        return ClientView(self._client, self.task_options.merged(**changes))

    def submit(self, fn: Callable[..., Any] | str, /, *args: Any, **kwargs: Any) -> Future:
        """``Client.submit`` with this view's options."""
        return self._client._submit(fn, args, kwargs, self.task_options)

    def map(
        self,
        fn: Callable[..., Any] | str,
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[Any]:
        """``Client.map`` with this view's options."""
        return self._client._map(fn, iterables, timeout, chunksize, self.task_options)

    def __repr__(self) -> str:
        return f"<zdf client view {self.task_options}>"
