# libvirt-txmode Ansible collection (MIT): a minimal chroot connection.
# ruff: noqa: I001 - isort takes ansible.* for this repository's own ansible/ directory
"""Run tasks inside a local chroot: how the tests reach the Debian root they make as a second host.

ansible-core ships no chroot connection (community.general has one, but this collection must work
with ansible-core alone), and the test's second hypervisor is a directory on the controller with a
libvirtd of its own. Every path is resolved inside the root (files go in and out through ``cat``
run by ``chroot``), so an absolute symlink in the root never writes to the controller's files.
"""

from __future__ import annotations

import os
import subprocess
from typing import IO, Any, Optional

from ansible.errors import AnsibleConnectionFailure, AnsibleError
from ansible.module_utils.common.text.converters import to_bytes
from ansible.plugins.connection import ConnectionBase
from ansible.utils.display import Display

DOCUMENTATION = r"""
    name: chroot
    short_description: run tasks in a chroot on the controller
    description:
        - Runs commands with C(chroot ROOT /bin/sh -c ...) on the controller, as root.
        - Made for test hypervisors (a debootstrap root with its own libvirtd).
        - Not a security boundary.
    author: libvirt-txmode authors
    options:
      remote_addr:
        description: The root directory.
        default: inventory_hostname
        vars:
          - name: inventory_hostname
          - name: ansible_host
      executable:
        description: The shell inside the root.
        default: /bin/sh
        vars:
          - name: ansible_executable
"""

display = Display()

# Modules set their own locale; the controller's PATH (pyenv, venvs) means nothing inside.
CLEAN_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
}


class Connection(ConnectionBase):  # type: ignore[misc]
    transport = "libvirt_txmode.fleet.chroot"
    has_pipelining = True
    default_user = "root"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.root: Optional[str] = None

    def _connect(self) -> Connection:
        if self._connected:
            return self
        root = self.get_option("remote_addr")
        if os.geteuid() != 0:
            raise AnsibleConnectionFailure("the chroot connection needs root on the controller")
        if not os.path.isfile(os.path.join(root, "bin", "sh")):
            raise AnsibleConnectionFailure(f"{root} is not a root directory (no bin/sh)")
        self.root = root
        display.vvv(f"CHROOT {root}", host=root)
        self._connected = True
        return self

    def _run(
        self, argv: list[str], stdin: Optional[IO[bytes]] = None, in_data: bytes = b""
    ) -> tuple[int, bytes, bytes]:
        process = subprocess.Popen(
            ["chroot", str(self.root), *argv],
            stdin=stdin if stdin is not None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=CLEAN_ENV,
        )
        stdout, stderr = process.communicate(in_data if stdin is None else None)
        return process.returncode, stdout, stderr

    def exec_command(
        self, cmd: str, in_data: Optional[bytes] = None, sudoable: bool = False
    ) -> tuple[int, bytes, bytes]:
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        display.vvv(f"EXEC {cmd}", host=self.root)
        return self._run([self.get_option("executable"), "-c", cmd], in_data=in_data or b"")

    def put_file(self, in_path: str, out_path: str) -> None:
        super().put_file(in_path, out_path)
        display.vvv(f"PUT {in_path} TO {out_path}", host=self.root)
        try:
            with open(to_bytes(in_path, errors="surrogate_or_strict"), "rb") as source:
                rc, _, stderr = self._run(["/bin/sh", "-c", 'cat > "$0"', out_path], stdin=source)
        except OSError as exc:
            raise AnsibleError(f"cannot read {in_path}: {exc}") from None
        if rc != 0:
            raise AnsibleError(f"cannot write {out_path} in {self.root}: {stderr!r}")

    def fetch_file(self, in_path: str, out_path: str) -> None:
        super().fetch_file(in_path, out_path)
        display.vvv(f"FETCH {in_path} TO {out_path}", host=self.root)
        with open(to_bytes(out_path, errors="surrogate_or_strict"), "wb") as target:
            process = subprocess.Popen(
                ["chroot", str(self.root), "cat", "--", in_path],
                stdout=target,
                stderr=subprocess.PIPE,
                env=CLEAN_ENV,
            )
            _, stderr = process.communicate()
        if process.returncode != 0:
            raise AnsibleError(f"cannot read {in_path} in {self.root}: {stderr!r}")

    def close(self) -> None:
        self._connected = False
