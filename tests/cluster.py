"""The suite's local Redis Cluster: :mod:`taskloom.testing.cluster`, which users' own
tests may use too."""

from taskloom.testing.cluster import (
    PORTS,
    LocalCluster,
    free_port_block,
    sync_client,
    valkey_binary,
)

__all__ = ["PORTS", "LocalCluster", "free_port_block", "sync_client", "valkey_binary"]
