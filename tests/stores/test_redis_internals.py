"""The redis-py internals ``stores/connect.py`` subclasses, checked against the installed release.

``_Cluster``, ``_ClusterPipeline`` and ``_MasterFollowingPool`` override methods of redis-py
classes whose signatures are not public API. A release that changes one would break the
cache only at run time, on a cluster or a failover; these tests fail at once instead (and
pyproject.toml caps redis-py below its next major release).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.asyncio.sentinel import SentinelConnectionPool

from fastapi_tiered_cache.stores import connect


def _names(function: Callable[..., Any]) -> list[str]:
    return [
        parameter.name
        for parameter in inspect.signature(function).parameters.values()
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD)
    ]


@pytest.mark.parametrize(
    ("function", "positional"),
    [
        (ClusterPipeline.__init__, ["self", "client", "transaction"]),
        (ClusterPipeline.execute, ["self", "raise_on_error", "allow_redirections"]),
        (RedisCluster.pipeline, ["self", "transaction", "shard_hint"]),
        (SentinelConnectionPool.__init__, ["self", "service_name", "sentinel_manager"]),
    ],
    ids=["pipeline-init", "pipeline-execute", "cluster-pipeline", "sentinel-pool-init"],
)
def test_the_signatures_we_override_still_start_as_we_call_them(
    function: Callable[..., Any], positional: list[str]
) -> None:
    assert _names(function)[: len(positional)] == positional


def test_the_methods_we_wrap_still_exist() -> None:
    for owner, name in [
        (RedisCluster, "initialize"),
        (RedisCluster, "execute_command"),
        (SentinelConnectionPool, "get_connection"),
        (SentinelConnectionPool, "get_master_address"),
        (SentinelConnectionPool, "release"),
        (SentinelConnectionPool, "aclose"),
    ]:
        assert inspect.iscoroutinefunction(getattr(owner, name)), f"{owner.__name__}.{name}"


def test_our_subclasses_override_what_they_mean_to() -> None:
    assert connect._Cluster.__mro__[1] is RedisCluster
    assert connect._ClusterPipeline.__mro__[1] is ClusterPipeline
    assert connect._MasterFollowingPool.__mro__[1] is SentinelConnectionPool
