"""The house rule "no test reaches any address but loopback", enforced: `install` makes every
TCP/UDP connect of this Python process to an address that is not loopback fail (refused, as
an unreachable host would) and appends a line naming it to a log file, which the test suite
reads after each test (tests/conftest.py fails the test that caused one). The test process
installs it itself; every Python process a test starts gets it from tests/site/sitecustomize.py
(the suite puts that folder on PYTHONPATH)."""

from __future__ import annotations

import os
import socket
from typing import Any

_INET = (socket.AF_INET, socket.AF_INET6)


def _local(host: str) -> bool:
    import ipaddress

    try:
        addresses = [ipaddress.ip_address(host.split("%", 1)[0])]
    except ValueError:  # a name: what it resolves to
        try:
            infos = socket.getaddrinfo(host, None)
        except OSError:
            return True  # it goes nowhere
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    return all(a.is_loopback or a.is_unspecified for a in addresses)


def install(log: str) -> None:
    """Guard this process's sockets; refused connects are appended to the file ``log``."""
    if getattr(socket.socket, "_ds_guarded", False):
        return
    connect, connect_ex = socket.socket.connect, socket.socket.connect_ex

    def refused(sock: socket.socket, address: Any) -> bool:
        if sock.family not in _INET or not isinstance(address, tuple) or _local(address[0]):
            return False
        with open(log, "a", encoding="utf-8") as out:
            out.write(f"pid {os.getpid()} connected to {address[0]}:{address[1]}\n")
        return True

    def guarded_connect(sock: socket.socket, address: Any) -> None:
        if refused(sock, address):
            raise ConnectionRefusedError(f"tests reach only loopback, not {address[0]}")
        connect(sock, address)

    def guarded_connect_ex(sock: socket.socket, address: Any) -> int:
        if refused(sock, address):
            return 111  # ECONNREFUSED
        return connect_ex(sock, address)

    socket.socket.connect = guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = guarded_connect_ex  # type: ignore[method-assign]
    socket.socket._ds_guarded = True  # type: ignore[attr-defined]
