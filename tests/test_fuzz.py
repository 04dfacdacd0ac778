"""Bounded fuzzing (hypothesis) of everything that reads untrusted input.

Properties: parsing domain XML raises nothing but DomainXMLError; loading a policy raises nothing but
PolicyError; the hook's prepare path on any stdin exits 0 or 1 with no traceback and no stdout.
Example counts are fixed so the suite's run time stays bounded in CI.
"""

from __future__ import annotations

import io
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libvirt_txmode.engine.check import check_domain
from libvirt_txmode.engine.domain_xml import DomainXMLError, parse_domain
from libvirt_txmode.engine.model import Guest, HostCapabilities, Support, SupportState
from libvirt_txmode.engine.policy import Policy, PolicyError, parse_policy
from libvirt_txmode.hook import protocol as hook

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Pieces libvirt domain XML is made of, plus the hostile ones: entities, DOCTYPEs, control bytes.
FRAGMENTS = [
    "<domain type='kvm'>", "<domain type='qemu'>", "</domain>", "<name>", "</name>", "vm1",
    "<devices>", "</devices>", "<interface type='network'>", "<interface type='bridge'>",
    "<interface type='vhostuser'>", "<interface type='hostdev'>", "</interface>",
    "<model type='virtio'/>", "<model type='virtio-transitional'/>", "<model type='e1000'/>",
    "<driver txmode='iothread'/>", "<driver txmode='timer'/>", "<driver txmode='bh'/>",
    "<driver name='qemu' txmode='timer'/>", "<driver name='vhost'/>", "<mac address='52:54:00:00:00:01'/>",
    "<address type='ccw'/>", "<address type='virtio-mmio'/>", "<source network='storage'/>",
    "<os><type arch='s390x'>hvm</type></os>", "<os><type arch='aarch64' machine='vexpress'>hvm</type></os>",
    "<emulator>/usr/bin/qemu-system-x86_64</emulator>", "<!DOCTYPE domain [<!ENTITY e SYSTEM 'file:///etc/passwd'>]>",
    "&e;", "&amp;", "&#10;", "&#0;", "<![CDATA[x]]>", "<?pi x?>", "<!-- c -->", "\x00", "\x1b[31m", "$(id)",
    "'", '"', "<", ">", "\n", "\xff", "é",
]  # fmt: skip

xml_documents = st.one_of(
    st.binary(max_size=2000),
    st.lists(st.sampled_from(FRAGMENTS), max_size=40).map(
        lambda parts: "".join(parts).encode("utf-8", "replace")
    ),
)

HOST = HostCapabilities(
    name="fuzz",
    guests=(Guest("x86_64", "/usr/bin/qemu-system-x86_64", ("qemu", "kvm")),),
    devices={
        "/usr/bin/qemu-system-x86_64": {
            "virtio-net-pci": Support(SupportState.SUPPORTED, "fuzz"),
            "virtio-net-ccw": Support(SupportState.UNSUPPORTED, "fuzz"),
        }
    },
)


@FUZZ
@given(xml_documents)
def test_domain_parser_raises_only_its_own_error(data: bytes) -> None:
    try:
        domain = parse_domain(data, "fuzz.xml")
    except DomainXMLError as exc:
        assert exc.line >= 1
        assert exc.message
        return
    for finding in check_domain(domain, Policy(), [HOST]):
        assert finding.interface is not None and 0 <= finding.interface < len(domain.nics)
        assert finding.mac == domain.nics[finding.interface].mac


POLICY_FRAGMENTS = [
    "version: 1\n", "version: 2\n", "action: enforce\n", "action: audit\n", "action: [x]\n",
    "on_unknown: allow\n", "on_error: deny\n", "emulators: [/usr/bin/qemu-*]\n", "emulators: 3\n",
    "probe_timeout: 0.5\n", "probe_timeout: -1\n", "probe_timeout: .inf\n", "defaults:\n",
    "  allowed: [iothread]\n", "  allowed: [bh]\n", "  require: yes\n", "  ineffective: warn\n",
    "rules:\n", "  - name: r\n", "    match: {domain: 'db-*'}\n", "    allowed: []\n", "  - 7\n",
    "!!python/object/apply:os.system ['true']\n", "&a [*a]\n", "? [a]\n: b\n", "{", "\t", "\x00", "- - -\n",
    "x: !!binary aGVsbG8=\n", "<<: {a: 1}\n", "%YAML 1.1\n---\n", "...\n",
]  # fmt: skip


@FUZZ
@given(
    st.one_of(
        st.text(max_size=500),
        st.lists(st.sampled_from(POLICY_FRAGMENTS), max_size=25).map("".join),
    )
)
def test_policy_parser_raises_only_policy_error(text: str) -> None:
    try:
        policy = parse_policy(text, "fuzz.yaml")
    except PolicyError as exc:
        assert str(exc).startswith("fuzz.yaml:")
        assert exc.line >= 1
        return
    assert policy.version == 1
    assert policy.action in ("enforce", "audit")


POLICY = """\
version: 1
emulators: [/usr/bin/qemu-system-*]
defaults:
  allowed: [iothread]
"""


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(xml_documents)
def test_hook_decides_on_any_stdin(tmp_path: Path, data: bytes) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    err = io.StringIO()
    argv = ["--policy", str(policy), "--snapshot", "", "--cache-dir", str(tmp_path / "cache"),
            "--", "vm", "prepare", "begin", "-"]  # fmt: skip
    code = hook.main(argv, stdin=io.BytesIO(data), stderr=err)
    assert code in (0, 1)
    assert "Traceback" not in err.getvalue()
    assert "internal error" not in err.getvalue()
    if code == 1:
        assert err.getvalue().startswith("libvirt-txmode: ")
        assert all(line.startswith("libvirt-txmode: ") for line in err.getvalue().splitlines())
