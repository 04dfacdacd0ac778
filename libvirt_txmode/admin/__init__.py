"""The ``libvirt-txmode`` subcommands and what they need of the running daemon."""
