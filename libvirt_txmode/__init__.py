"""libvirt-txmode: check virtio NIC ``<driver txmode>`` against the host and a site policy."""

__version__ = "0.4.0"
