"""This host's facts: QEMU probing and its cache, libvirt's own files, snapshots."""
