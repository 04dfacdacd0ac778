"""``python -m libvirt_txmode``: the ``libvirt-txmode`` command under a name no move of its modules
changes. The snapshot unit install-hook writes runs it this way."""

import sys

from .admin.commands import main

if __name__ == "__main__":
    sys.exit(main())
