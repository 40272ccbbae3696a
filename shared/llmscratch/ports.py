"""A free TCP port on this machine, for the servers the course starts: the web app (:mod:`llmscratch.app`, introduced
in ch05_pretraining), the process group of the book's DDP script (:mod:`llmscratch.ddp_script`, ch01_intro,
appendix A.9.3), and the tests' servers and torchrun rendezvous."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now on ``host`` (the system's choice; another program may take it later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]
