"""Rank 0's rendezvous servers (TCPStore, Horovod's HTTP store) listen only on the
address the other ranks dial, never on every interface (issue 13, item 3)."""

from __future__ import annotations

import http.client
import ipaddress
import socket
import sys

import pytest

from sparkdl.collective.horovod_backend import HorovodCollective
from sparkdl.collective.listen import listen_on
from sparkdl.collective.torch_distributed import TorchDistributedCollective
from sparkdl.errors import ConfigError

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="reads listening sockets from /proc/net")


def _listening(port: int) -> set[str]:
    """The local addresses of every TCP socket listening on ``port`` (any owner)."""
    found = set()
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            hex_ip, hex_port = local.split(":")
            if state != "0A" or int(hex_port, 16) != port:  # 0A: LISTEN
                continue
            # /proc prints each 32-bit word in host (little-endian) order.
            raw = b"".join(bytes.fromhex(hex_ip[i:i + 8])[::-1]
                           for i in range(0, len(hex_ip), 8))
            found.add(str(ipaddress.ip_address(raw if width == 16 else raw[:4])))
    return found


def _other_local_ipv4() -> str | None:
    """A non-loopback IPv4 address of this machine, if it has one."""
    psutil = pytest.importorskip("psutil")
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == socket.AF_INET and not a.address.startswith("127."):
                return a.address
    return None


def _refused(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def test_listen_on_binds_the_given_address_only():
    with listen_on("127.0.0.1") as sock:
        assert sock.getsockname()[0] == "127.0.0.1" and sock.getsockname()[1] > 0


def test_an_address_of_another_machine_is_a_config_error():
    # 203.0.113.0/24 is TEST-NET-3: never an address of this machine.
    with pytest.raises(ConfigError, match="203.0.113.7.*SPARK_LOCAL_IP"):
        listen_on("203.0.113.7")


@linux_only
def test_the_tcp_store_listens_on_rank_0s_address_only():
    collective = TorchDistributedCollective()
    port = collective.advertise(0, ["127.0.0.1", "127.0.0.1"])["store_port"]
    try:
        assert _listening(port) == {"127.0.0.1"}
    finally:
        collective.shutdown()


def test_the_tcp_store_is_not_reachable_on_another_interface():
    other = _other_local_ipv4()
    if other is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    collective = TorchDistributedCollective()
    port = collective.advertise(0, [other, other])["store_port"]
    try:
        socket.create_connection((other, port), timeout=5).close()  # where ranks dial
        assert _refused("127.0.0.1", port)
    finally:
        collective.shutdown()


@pytest.fixture
def horovod_server():
    pytest.importorskip("horovod")
    collective = HorovodCollective()
    port = collective.advertise(0, ["127.0.0.1", "127.0.0.1"])["rendezvous_port"]
    yield port
    collective.shutdown()


@linux_only
def test_horovods_rendezvous_server_listens_on_rank_0s_address_only(horovod_server):
    assert _listening(horovod_server) == {"127.0.0.1"}


def _request(port: int, method: str, path: str, body: bytes | None = None,
             headers: dict | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_horovods_rendezvous_server_stores_values_and_refuses_the_rest(horovod_server):
    assert _request(horovod_server, "PUT", "/global/rank0", b"address")[0] == 200
    assert _request(horovod_server, "GET", "/global/rank0") == (200, b"address")
    # HEAD would otherwise tell whether a file exists in the executor's directory.
    assert _request(horovod_server, "HEAD", "/pyproject.toml")[0] == 405
    # A declared terabyte is refused before a byte is read or allocated.
    conn = socket.create_connection(("127.0.0.1", horovod_server), timeout=10)
    try:
        conn.sendall(b"PUT /global/big HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: 1099511627776\r\n\r\n")
        assert conn.recv(64).startswith(b"HTTP/1.0 413")
    finally:
        conn.close()
    assert _request(horovod_server, "GET", "/global/rank0") == (200, b"address")
