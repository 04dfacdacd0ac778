"""``libvirt-txmode probe``: ask an emulator directly whether its virtio-net devices have 'tx'."""

from __future__ import annotations

import argparse
from typing import IO, Any

from ..ci.cli import FILE_COMPLETION, complete_as
from ..common.exits import EXIT_OK, FatalError
from ..host.emulator import ProbeError, trust_problem
from ..host.probe import probe
from .options import add_policy, host_policy


def add_parser(sub: Any) -> None:
    cmd = sub.add_parser(
        "probe", help="ask an emulator directly whether its virtio-net devices have 'tx'"
    )
    complete_as(cmd.add_argument("emulator", help="path of the QEMU binary"), FILE_COMPLETION)
    cmd.add_argument(
        "-d",
        "--device",
        action="append",
        help="device (repeatable; default: every virtio-net transport)",
    )
    cmd.add_argument("-m", "--method", default="auto", choices=["auto", "help", "qmp"])
    add_policy(cmd, "policy whose 'emulators' list must trust the binary")
    cmd.add_argument(
        "-t",
        "--timeout",
        type=float,
        default=None,
        help="seconds (default: the policy's probe_timeout)",
    )
    cmd.set_defaults(run=run)


def run(args: argparse.Namespace, out: IO[str]) -> int:
    from ..host.libvirt_snapshot import VIRTIO_NET_DEVICES  # noqa: PLC0415 - loads lxml: not for --help

    policy = host_policy(args.policy)
    problem = trust_problem(args.emulator, policy.emulators)
    if problem is not None:
        raise FatalError(problem)
    devices = args.device or list(VIRTIO_NET_DEVICES)
    try:
        results = probe(
            args.emulator, devices, timeout=args.timeout or policy.probe_timeout, method=args.method
        )
    except ProbeError as exc:
        raise FatalError(str(exc)) from None
    for device in devices:
        support = results[device]
        out.write(f"{device}: {support.state.value} ({support.detail}; method {support.method})\n")
    return EXIT_OK
