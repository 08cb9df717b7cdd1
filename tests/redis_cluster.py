"""Throwaway Redis Clusters for the tests: ``redis-server --cluster-enabled yes`` on free
ports, joined by ``redis-cli --cluster create``, each node a ``RedisServer`` of its own.

``RedisCluster(masters=3)`` is three masters sharing the 16,384 slots; ``replicas=1`` gives
every master a replica (6 nodes), which takes over when its master is killed. ``start()``
returns once every node agrees the cluster is ``ok`` and knows every slot's owner.

``names_on_distinct_masters(n)`` picks worker names whose slots lie on n different masters;
``kill_master_of(key)`` kills -9 the master that owns a key's slot (its replica takes over
within about ``cluster-node-timeout`` = 2 s plus an election; ``start()`` waits until every
replica has synced, since one that never did refuses to take over).
"""

from __future__ import annotations

import itertools
import random
import shutil
import socket
import subprocess
import time

from redis_server import NO_REDIS_MESSAGE, RedisServer

NO_REDIS_CLI_MESSAGE = (
    "the cluster tests need `redis-cli` (it comes with redis-server: apt-get install "
    "redis-server, or brew install redis) to join nodes with `redis-cli --cluster create`"
)
CLUSTER_READY_TIMEOUT_S = 30.0
SLOT_COUNT = 16384
CLUSTER_BUS_PORT_OFFSET = 10000  # a node also listens on port + 10000 for the cluster bus


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_port() -> int:
    """A free port whose cluster-bus port (port + 10000) is free and valid too."""
    for _ in range(1000):
        port = random.randint(20000, 65535 - CLUSTER_BUS_PORT_OFFSET)
        if port_is_free(port) and port_is_free(port + CLUSTER_BUS_PORT_OFFSET):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def redis_cli_binary() -> str:
    binary = shutil.which("redis-cli")
    if binary is None:
        raise RuntimeError(NO_REDIS_CLI_MESSAGE)
    return binary


class RedisCluster:
    """A cluster of ``masters`` masters, each with ``replicas`` replicas, on 127.0.0.1."""

    def __init__(self, masters: int = 3, replicas: int = 0, *extra_args: str):
        if shutil.which("redis-server") is None:
            raise RuntimeError(NO_REDIS_MESSAGE)
        self.masters = masters
        self.replicas = replicas
        self.extra_args = extra_args
        self.nodes: list[RedisServer] = []

    @property
    def url(self) -> str:
        """Any one node's URL: a cluster client finds the others from it."""
        return self.nodes[0].url.removesuffix("/0")

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    def start(self) -> RedisCluster:
        for _ in range(self.masters * (1 + self.replicas)):
            node = RedisServer(
                free_cluster_port(), "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "2000",
                # a replica syncs at once (Redis 7 waits 5 s for more replicas by default): one
                # that has never synced refuses to take over from its master
                "--repl-diskless-sync-delay", "0",
                *self.extra_args,
            )
            self.nodes.append(node.start())
        addresses = [f"127.0.0.1:{port}" for port in self.ports]
        created = subprocess.run(
            [redis_cli_binary(), "--cluster", "create", *addresses,
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            capture_output=True, text=True, timeout=60,
        )
        if created.returncode != 0:
            self.stop()
            raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout[-2000:]} {created.stderr[-2000:]}")
        self.wait_until_ok()
        self.wait_until_replicas_synced()
        return self

    def wait_until_replicas_synced(self, timeout_s: float = CLUSTER_READY_TIMEOUT_S) -> None:
        """Until every live replica's link to its master is up (it could take over)."""
        deadline = time.monotonic() + timeout_s
        for node in self.live_nodes():
            while True:
                replication = self.cli(node.port, "INFO", "replication")
                if "role:master" in replication or "master_link_status:up" in replication:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the replica on port {node.port} did not sync within {timeout_s:.0f} s")
                time.sleep(0.05)

    def cli(self, port: int, *command: str) -> str:
        """One command to one node (``redis-cli -p port ...``), its answer as text."""
        answered = subprocess.run([redis_cli_binary(), "-p", str(port), *command],
                                  capture_output=True, text=True, timeout=30)
        return answered.stdout.strip()

    def live_nodes(self) -> list[RedisServer]:
        return [node for node in self.nodes if node.process is not None and node.process.poll() is None]

    def wait_until_ok(self, timeout_s: float = CLUSTER_READY_TIMEOUT_S) -> None:
        """Until every live node says ``cluster_state:ok`` with all slots assigned and the
        same view of who owns them (replicas included)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            views = []
            for node in self.live_nodes():
                info = self.cli(node.port, "CLUSTER", "INFO")
                if "cluster_state:ok" not in info or f"cluster_slots_ok:{SLOT_COUNT}" not in info:
                    break
                views.append(self.master_ports(node.port))
            else:
                if views and all(view == views[0] for view in views):
                    return
            time.sleep(0.1)
        raise RuntimeError(f"the cluster on ports {self.ports} was not ok within {timeout_s:.0f} s")

    def master_ports(self, asked_port: int | None = None) -> list[int]:
        """The ports of the masters that own slots, as one node sees them."""
        port = asked_port if asked_port is not None else self.live_nodes()[0].port
        masters = set()
        for line in self.cli(port, "CLUSTER", "NODES").splitlines():
            fields = line.split()
            if len(fields) > 8 and "master" in fields[2] and "fail" not in fields[2]:
                masters.add(int(fields[1].split("@")[0].rsplit(":", 1)[1]))
        return sorted(masters)

    def node_for_slot(self, slot: int) -> RedisServer:
        """The node that owns ``slot`` now."""
        for line in self.cli(self.live_nodes()[0].port, "CLUSTER", "NODES").splitlines():
            fields = line.split()
            if len(fields) <= 8 or "master" not in fields[2] or "fail" in fields[2]:
                continue
            for owned in fields[8:]:
                if owned.startswith("["):  # a slot being migrated or imported
                    continue
                first, _, last = owned.partition("-")
                if int(first) <= slot <= int(last or first):
                    port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
                    return next(node for node in self.nodes if node.port == port)
        raise LookupError(f"no master owns slot {slot}")

    def node_id(self, port: int) -> str:
        return self.cli(port, "CLUSTER", "MYID")

    def slot_of(self, key: str) -> int:
        return int(self.cli(self.live_nodes()[0].port, "CLUSTER", "KEYSLOT", key))

    def names_on_distinct_masters(self, count: int, prefix: str = "w") -> list[str]:
        """``count`` worker names (``<prefix>0``, ``<prefix>1``, ...) whose keys' slots (tag
        ``{name}``) are owned by ``count`` different masters: their load spreads."""
        names: list[str] = []
        owners: set[int] = set()
        for n in itertools.count():
            name = f"{prefix}{n}"
            owner = self.node_for_slot(self.slot_of(f"redisq:{{{name}}}")).port
            if owner not in owners:
                owners.add(owner)
                names.append(name)
            if len(names) == count:
                return names
            if n > 10_000:
                raise RuntimeError(f"no {count} names on distinct masters (masters: {self.master_ports()})")
        raise AssertionError("unreachable")

    def kill_master_of(self, key: str) -> RedisServer:
        """kill -9 the master that owns ``key``'s slot now; the node, for its port."""
        node = self.node_for_slot(self.slot_of(key))
        assert node.process is not None
        node.process.kill()
        node.process.wait(10)
        return node

    def wait_until_replaced(self, port: int, timeout_s: float = CLUSTER_READY_TIMEOUT_S) -> None:
        """Until every live node sees the master on ``port`` failed and another master
        (its promoted replica) owning its slots, and the cluster ``ok`` again."""
        deadline = time.monotonic() + timeout_s
        while any(port in self.master_ports(node.port) for node in self.live_nodes()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the master on port {port} was not replaced within {timeout_s:.0f} s")
            time.sleep(0.05)
        self.wait_until_ok(max(1.0, deadline - time.monotonic()))

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self.nodes = []
