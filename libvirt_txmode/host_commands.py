"""The ``libvirt-txmode`` command under the name 0.3 gave it: a snapshot unit install-hook wrote
then runs ``python -I -m libvirt_txmode.host_commands snapshot``, and install-hook never
rewrites a unit that exists, so this name stays for as long as such units may."""

import sys

from .admin.commands import main

if __name__ == "__main__":
    sys.exit(main())
