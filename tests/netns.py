"""Simulated hosts for tests of what crosses a network: each host is a Linux network namespace with its own
address on one bridge, and its own hostname (a UTS namespace), so processes on two "hosts" share nothing but
the wire. This test process stays in the root namespace, which holds the bridge's own address: it plays the
database host and the operator. Needs root and iproute2; `Network.skip_reason()` says why not otherwise."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


@dataclass
class Network:
    """A bridge `cxb<tag>` on 10.231.<n>.0/24 (the root namespace is .1) and a namespace per host."""

    tag: str = field(default_factory=lambda: f"{random.randrange(16**6):06x}")
    subnet: int = field(default_factory=lambda: random.randrange(1, 255))
    hosts: dict[str, str] = field(default_factory=dict)  # name → address
    _veths: dict[str, str] = field(default_factory=dict)  # name → its cable's end on the bridge

    @staticmethod
    def skip_reason() -> str | None:
        if os.geteuid() != 0:
            return "simulated hosts need root (network namespaces)"
        if shutil.which("ip") is None or shutil.which("unshare") is None:
            return "simulated hosts need iproute2 and util-linux (ip, unshare)"
        return None

    @property
    def bridge(self) -> str:
        return f"cxb{self.tag}"

    @property
    def cidr(self) -> str:
        return f"10.231.{self.subnet}.0/24"

    @property
    def gateway(self) -> str:
        """The root namespace's address on the bridge: what the hosts reach the database host at."""
        return f"10.231.{self.subnet}.1"

    def namespace(self, host: str) -> str:
        return f"cx{self.tag}-{host}"

    def create(self, names: Sequence[str]) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for number, name in enumerate(names, start=2):
            namespace, veth = self.namespace(name), f"cxv{self.tag}{number}"
            address = f"10.231.{self.subnet}.{number}"
            _ip("netns", "add", namespace)
            self.hosts[name], self._veths[name] = address, veth
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", namespace)
            _ip("link", "set", veth, "master", self.bridge, "up")
            _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
            _ip("-n", namespace, "link", "set", "eth0", "up")
            _ip("-n", namespace, "link", "set", "lo", "up")

    def on(self, host: str, command: Sequence[str]) -> list[str]:
        """`command` run on `host`: in its network namespace, with the host's name as its hostname. Each step
        execs the next, so the process started is the command itself (a signal reaches it)."""
        rename = 'hostname "$0" && exec "$@"'
        into = ["ip", "netns", "exec", self.namespace(host), "unshare", "--uts"]
        return [*into, "sh", "-c", rename, host, *command]

    def cut(self, host: str) -> None:
        """Unplugs the host's cable from the bridge: its link stays up, but every packet to or from it is
        lost, as when a switch port or a route dies. No reset reaches anyone: connections hang until a
        timeout says otherwise."""
        _ip("link", "set", self._veths[host], "nomaster")

    def mend(self, host: str) -> None:
        _ip("link", "set", self._veths[host], "master", self.bridge)

    def remove(self) -> None:
        for name in self.hosts:
            subprocess.run(["ip", "netns", "del", self.namespace(name)], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        self.hosts.clear()
