"""What several ``libvirt-txmode`` subcommands share: their common options (one installation's
directories, the libvirt URI, a policy, --reload) and what those options resolve to."""

from __future__ import annotations

import argparse
import os
import sys
from typing import IO, Callable, Optional

from ..ci.cli import DIR_COMPLETION, FILE_COMPLETION, complete_as
from ..common import paths
from ..common.exits import FatalError
from ..engine.policy import DEFAULT_POLICY_PATH, Policy, PolicyError, load_policy
from .layout import (
    DEFAULT_CACHE_DIR,
    DEFAULT_CONFIG_DIR,
    DEFAULT_HOOKS_DIR,
    DEFAULT_STATE_DIR,
    Layout,
)

DEFAULT_URI = "qemu:///system"
DEFAULT_SNAPSHOT = paths.SNAPSHOT
# A subcommand's runner, bound to its parser with set_defaults(run=...).
Handler = Callable[[argparse.Namespace, IO[str]], int]


def add_directories(cmd: argparse.ArgumentParser) -> None:
    """The directory options of install-hook, uninstall-hook and doctor (one installation)."""
    for flag, default, helptext in (
        ("--hooks-dir", DEFAULT_HOOKS_DIR, "libvirt's hook directory"),
        ("--config-dir", DEFAULT_CONFIG_DIR, "where policy.yaml lives"),
        ("--state-dir", DEFAULT_STATE_DIR, "snapshot and install manifests"),
        ("--cache-dir", DEFAULT_CACHE_DIR, "the hook's probe and verdict cache"),
    ):
        complete_as(
            cmd.add_argument(flag, default=default, help=f"{helptext} (default: %(default)s)"),
            DIR_COMPLETION,
        )


def add_connect(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "-c",
        "--connect",
        default=DEFAULT_URI,
        metavar="URI",
        help="libvirt URI (default: %(default)s)",
    )


def add_policy(cmd: argparse.ArgumentParser, helptext: str) -> None:
    complete_as(cmd.add_argument("-p", "--policy", default=None, help=helptext), FILE_COMPLETION)


def add_reload(cmd: argparse.ArgumentParser) -> None:
    group = cmd.add_mutually_exclusive_group()
    group.add_argument(
        "--reload",
        dest="reload",
        action="store_const",
        const=True,
        help="reload the running libvirt daemon (and, on systemd hosts, manage the snapshot "
        "unit) even for a --hooks-dir that is not libvirt's own",
    )
    group.add_argument(
        "--no-reload",
        dest="reload",
        action="store_const",
        const=False,
        help="never touch the running daemon (default for a --hooks-dir other than "
        f"{DEFAULT_HOOKS_DIR})",
    )
    cmd.set_defaults(reload=None)


def layout_of(args: argparse.Namespace) -> Layout:
    """The installation add_directories' options name."""
    # Absolute: the paths are written into the hook, which libvirt runs from its own directory.
    dirs = (args.hooks_dir, args.config_dir, args.state_dir, args.cache_dir)
    return Layout(*(os.path.abspath(d) for d in dirs))


def host_policy(path: Optional[str]) -> Policy:
    """The policy add_policy's option names, else the host's, else the built-in one."""
    if path is None and not os.path.exists(DEFAULT_POLICY_PATH):
        return Policy()
    try:
        return load_policy(path or DEFAULT_POLICY_PATH)
    except PolicyError as exc:
        raise FatalError(f"bad policy: {exc}") from None


def progress(quiet: bool) -> Callable[[str], None]:
    def say(message: str) -> None:
        if not quiet:
            sys.stderr.write(f"libvirt-txmode: {message}\n")
            sys.stderr.flush()

    return say
