"""End-to-end fixtures: the whole stack as subprocesses, as `rtclab up` starts it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest

from lab.stack import Stack, StackConfig

StackFactory = Callable[..., AbstractAsyncContextManager[Stack]]


@pytest.fixture
def stack_factory(tmp_path: Any) -> StackFactory:
    """``async with stack_factory(media_servers=2) as stack:`` on free loopback ports."""

    @asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[Stack]:
        config = StackConfig(log_dir=tmp_path / "logs", **overrides)
        async with Stack(config) as stack:
            yield stack

    return start
