"""Markers only this project's tools put into a domain's <metadata>, found by a byte search (a
few microseconds on a domain's XML, before anything is parsed). The canary
(``libvirt-txmode doctor --canary``, admin/liveness.py) is refused before the policy is read,
whatever it says: refused by the hook proves the daemon runs it. The self-test's sample domain
(admin/selftest.py) is checked like any other, but an allowed one is logged as DECISION=selftest,
not as a decision.

A module of its own: the admin commands write these markers without loading the hook's check.
"""

from __future__ import annotations

CANARY_NAMESPACE = "http://libvirt-txmode.invalid/xmlns/canary/1"
SELFTEST_NAMESPACE = "http://libvirt-txmode.invalid/xmlns/selftest/1"
# The self-test's domain name: its starts prove the hook works and are not counted as VM starts.
SELFTEST_DOMAIN = "libvirt-txmode-selftest"
