"""The self-test: before the hook goes live it is run once, as libvirt would run it, on a
``prepare begin`` event of a sample domain and on no-op events. A hook that cannot start
(``pip install --user`` is invisible to ``python -I``) is refused instead of refusing every VM
start later."""

from __future__ import annotations

import subprocess

from ..hook.markers import SELFTEST_DOMAIN, SELFTEST_NAMESPACE
from .hook_file import HOOK_ENV
from .layout import InstallError

# A domain without NICs: compliant under every valid policy, yet it goes through the whole hook
# (policy, XML parser, engine, logging), which is what the self-test must prove. Its marker has
# the hook log it as DECISION=selftest, not as an allowed start.
SELFTEST_XML = (
    f"<domain type='qemu'><name>{SELFTEST_DOMAIN}</name><memory unit='MiB'>64</memory>"
    f"<metadata><txmode:selftest xmlns:txmode='{SELFTEST_NAMESPACE}'/></metadata>"
    "<os><type arch='x86_64'>hvm</type></os><devices/></domain>\n"
)
SELFTEST_TIMEOUT = 120.0


def self_test(hook: str) -> None:
    """Run the wrapper as libvirt would, once on ``prepare begin`` of a compliant sample domain
    and once on a no-op event; InstallError with the hook's own words when it cannot run."""
    events = (("prepare", "begin"), ("started", "begin"), ("reconnect", "begin"))
    for operation, sub in events:
        try:
            proc = subprocess.run(
                ["/bin/sh", hook, SELFTEST_DOMAIN, operation, sub, "-"],
                input=SELFTEST_XML.encode(),
                capture_output=True,
                env=HOOK_ENV,
                cwd="/",
                timeout=SELFTEST_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise InstallError(
                f"the hook did not answer '{operation} {sub}' in {SELFTEST_TIMEOUT:.0f} s"
            ) from None
        if proc.returncode != 0 or proc.stdout:
            said = proc.stderr.decode("utf-8", "replace").strip() or "no message"
            if proc.stdout:
                said += " (and it wrote to stdout, which libvirt would take as XML)"
            raise InstallError(
                f"the hook failed its self-test on a sample '{operation} {sub}' event "
                f"(exit {proc.returncode}): {said}"
            )
