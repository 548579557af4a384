"""Network faults for the cluster tests: a private network namespace per test and nftables partitions inside it.

The cluster's processes, its clients and its nftables rules live in a network of their own, so a partition cannot
touch anything else on the machine and nothing is left behind.

``private_network()`` moves the *calling thread* into a new network namespace (``unshare(CLONE_NEWNET)``), brings its
loopback up (127.0.0.0/8 is local there, so nodes on 127.0.0.1/.2/.3 work as on the host), and moves the thread
back when the block ends. Everything the thread starts meanwhile inherits the namespace: server processes
(``subprocess`` forks from the calling thread), ``nft`` (its rules are the namespace's own) and every socket the
test's clients open. Once the last process in it exits, the kernel deletes the namespace with its rules: a killed
test run leaves no firewall table on the host.

``Partition`` cuts one node's gRPC links to the others in both directions (packets dropped, never rejected, so calls
hang until their deadlines as on a real network failure); the S3 ports stay open, so the test keeps talking to every
node. Each node's gRPC calls leave from its own 127.0.0.x (cluster/peers.py ``source_address``), so a rule names
the two ends of a link by address.

Needs root (the namespace and nftables), ``nft`` and ``faketime``; ``problem()`` says why they cannot be used, for a
skip reason. The fixtures ``own_network`` and ``partitions`` are in tests/integration/conftest.py.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import itertools
import os
import shutil
import socket
import struct
import subprocess
from collections.abc import Iterator
from typing import Any

NFT = shutil.which("nft") or shutil.which("nft", path="/usr/local/sbin:/usr/sbin:/sbin") or "nft"
CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
_libc = ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock.fileno(), SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


@contextlib.contextmanager
def private_network() -> Iterator[None]:
    """Run the block in a fresh network namespace (this thread only), then return to the one it came from."""
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
        try:
            _loopback_up()
            yield
        finally:
            _check(_libc.setns(original, CLONE_NEWNET), "setns back to the original network namespace")
    finally:
        os.close(original)


def namespace_id() -> str:
    """The calling thread's network namespace (``net:[inode]``), to check where it is."""
    return os.readlink("/proc/thread-self/ns/net")


def problem() -> str | None:
    """Why network faults cannot be made here (root, nft, faketime, a private namespace), or None."""
    if os.geteuid() != 0:
        return "needs root for a network namespace and nftables"
    for tool, package in ((NFT, "nftables"), ("faketime", "faketime")):
        if shutil.which(tool) is None:
            return f"{tool} not installed (apt-get install {package}; .ci/run does)"
    try:
        with private_network():
            listed = subprocess.run([NFT, "list", "tables"], capture_output=True, text=True, timeout=30)
    except OSError as exc:
        return f"no private network namespace here: {exc}"
    if listed.returncode != 0:
        return f"nft cannot be used here: {listed.stderr.strip()}"
    return None


def grpc_port(node: Any) -> int:
    return int(node.extra_env["S4_NODE_GRPC_ADDR"].rpartition(":")[2])


_TABLES = itertools.count()


class Partition:
    """One node (``pool[isolated]``, ServerProcess objects) cut off from the others: the gRPC traffic between their
    addresses dropped in both directions by an nftables table of the test's network namespace."""

    def __init__(self, pool: list[Any], isolated: int) -> None:
        self.table = f"s4test_{next(_TABLES)}"
        self.pool, self.isolated = pool, isolated

    def cut(self) -> None:
        alone = self.pool[self.isolated]
        others = [n for i, n in enumerate(self.pool) if i != self.isolated]
        hosts = ", ".join(sorted({n.host for n in others}))
        ports = ", ".join(str(p) for p in sorted({grpc_port(n) for n in others}))
        rules = f"""
table inet {self.table} {{
    chain output {{
        type filter hook output priority 0; policy accept;
        ip saddr {alone.host} ip daddr {{ {hosts} }} tcp dport {{ {ports} }} drop
        ip saddr {alone.host} ip daddr {{ {hosts} }} tcp sport {grpc_port(alone)} drop
        ip saddr {{ {hosts} }} ip daddr {alone.host} tcp dport {grpc_port(alone)} drop
        ip saddr {{ {hosts} }} ip daddr {alone.host} tcp sport {{ {ports} }} drop
    }}
}}
"""
        done = subprocess.run([NFT, "-f", "-"], input=rules, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr + rules

    def heal(self) -> None:
        subprocess.run([NFT, "delete", "table", "inet", self.table], capture_output=True, timeout=30)

    def active(self) -> bool:
        listed = subprocess.run([NFT, "list", "tables"], capture_output=True, text=True, timeout=30)
        return f"inet {self.table}" in listed.stdout
