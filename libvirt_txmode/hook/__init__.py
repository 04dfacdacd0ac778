"""libvirt's qemu hook: the protocol, the cached decision and the full check behind it."""
