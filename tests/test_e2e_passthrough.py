"""Issue 19 on real QEMU: every ``<qemu:commandline>``/``<qemu:override>`` route to a NIC's ``tx``.

Two parts, both judged by QEMU itself (QMP ``qom-get … tx``):

- Real libvirt 9.0 + QEMU 7.2 (Debian 12). Each route is a domain (TCG, no disk, 128 MiB). With
  the gate open (a policy allowing timer and any passthrough) it is started paused and QEMU's
  view of every virtio-net device shows the route is real: the forbidden routes do reach a
  device with ``tx=timer``, and ``libvirt-txmode audit`` must report those running domains. With
  the site policy (``defaults: {allowed: [iothread]}``, ``passthrough`` at its default ``deny``)
  each is started again through the installed hook: a forbidden route is refused, a harmless
  control starts and every virtio-net device it has gets an allowed tx (bh, or unset: QEMU's
  default bh). validate-domain (on the XML as written and as libvirt formats it) and audit (the
  defined domains' inactive XML, the running controls' live XML) must give the hook's verdict,
  with the argument named. The domains are started in batches and destroyed as soon as QEMU and
  audit have been asked, so the whole file takes well under a minute or two.
- QEMU 7.2 alone: each option syntax ``qemu_args.py`` reads is given to the real binary, and the
  tx QEMU gives the device must be the one the engine computes (or the engine must call the
  argument unverifiable); where QEMU refuses to start, the engine may say anything.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest

from libvirt_txmode.engine.model import Domain, HostCapabilities
from libvirt_txmode.engine.passthrough import resolve
from libvirt_txmode.engine.qemu_args import parse_commandline
from tests import libvirt_env as env
from tests.e2e_qemu import (
    QEMU_NS,
    Start,
    args,
    destroy_all,
    findings_by_file,
    override,
    start_all,
    validate,
)

pytestmark = pytest.mark.integration

QEMU = "/usr/bin/qemu-system-x86_64"
SITE_POLICY = """\
version: 1
emulators: [/usr/bin/qemu-system-*]
defaults:
  allowed: [iothread]
"""
# The gate open: what QEMU does with each route when nothing stops it.
OPEN_POLICY = """\
version: 1
emulators: [/usr/bin/qemu-system-*]
passthrough: allow
defaults:
  allowed: [iothread, timer]
"""
ALLOWED_TX = ("bh", "")  # qom-get gives "" for a tx nobody set: QEMU then uses bh
READCONFIG = "@READCONFIG@"  # stands for the -readconfig file's path in a route's XML

REFUSED = "refused"  # the hook refuses; an error finding everywhere
STARTS = "starts"  # provably harmless: starts, no finding anywhere
QEMU_EXITS = "qemu-exits"  # the hook lets it by with a warning; QEMU itself refuses to start


def nic(
    mac: int, model: str = "virtio", txmode: Optional[str] = None, slot: Optional[int] = None
) -> str:
    driver = f"<driver txmode='{txmode}'/>" if txmode else ""
    address = (
        f"<address type='pci' domain='0x0000' bus='0x00' slot='{slot:#04x}' function='0x0'/>"
        if slot is not None
        else ""
    )
    return (
        f"<interface type='user'><mac address='52:54:00:7c:00:{mac:02x}'/>"
        f"<model type='{model}'/>{driver}{address}</interface>"
    )


@dataclass(frozen=True)
class Route:
    name: str
    nics: str
    extra: str
    verdict: str
    code: str = ""  # the finding every tool gives (REFUSED: an error, QEMU_EXITS: a warning)
    named: str = ""  # what that finding's message (and the hook's refusal) quotes
    # With the gate open: the tx QEMU reports for each virtio-net device, sorted.
    open_tx: tuple[str, ...] = ()
    # Memory balloons are virtio-pci devices too: routes that name an ancestor of every
    # virtio-pci device have none, so that only the NICs can take the -global.
    balloon: bool = True


# QEMU makes the QemuOpts -devices before the JSON ones libvirt passes (softmmu/vl.c,
# qemu_create_cli_devices): an extra device needs an address of its own, off libvirt's slots.
ROUTES = (
    Route(
        "global-virtio-net-device",
        nic(1),
        args("-global", "virtio-net-device.tx=timer"),
        REFUSED,
        "txmode-not-allowed",
        "-global virtio-net-device.tx=timer",
        ("timer",),
    ),
    Route(
        "global-virtio-net-pci-base",
        nic(2),
        args("-global", "virtio-net-pci-base.tx=timer"),
        REFUSED,
        "txmode-not-allowed",
        "-global virtio-net-pci-base.tx=timer",
        ("timer",),
    ),
    Route(
        "global-long-form",
        nic(3),
        args("-global", "driver=virtio-net-device,property=tx,value=timer"),
        REFUSED,
        "txmode-not-allowed",
        "-global driver=virtio-net-device,property=tx,value=timer",
        ("timer",),
    ),
    Route(
        "global-virtio-pci-ancestor",
        nic(4),
        args("-global", "virtio-pci.tx=timer"),
        REFUSED,
        "txmode-not-allowed",
        "-global virtio-pci.tx=timer",
        ("timer",),
        balloon=False,
    ),
    Route(
        "device-driver-not-first",
        nic(5, txmode="iothread"),
        args("-device", "tx=timer,driver=virtio-net-pci,id=x,addr=0x10"),
        REFUSED,
        "txmode-not-allowed",
        "-device tx=timer,driver=virtio-net-pci,id=x,addr=0x10",
        ("bh", "timer"),
    ),
    Route(
        "device-json-single-quotes",
        nic(6, txmode="iothread"),
        args("-device", "{'driver':'virtio-net-pci','id':'x','addr':'0x10','tx':'timer'}"),
        REFUSED,
        "txmode-not-allowed",
        "-device {'driver':'virtio-net-pci','id':'x','addr':'0x10','tx':'timer'}",
        ("bh", "timer"),
    ),
    Route(
        "readconfig",
        nic(7),
        args("-readconfig", READCONFIG),
        REFUSED,
        "passthrough-unverifiable",
        f"-readconfig {READCONFIG}",
        ("timer",),
    ),
    Route(
        "set-extra-device",
        nic(8, txmode="iothread"),
        args("-device", "virtio-net-pci,id=x,addr=0x10", "-set", "device.x.tx=timer"),
        REFUSED,
        "txmode-not-allowed",
        "-set device.x.tx=timer",
        ("bh", "timer"),
    ),
    Route(
        "global-reaches-extra-device",
        nic(9, txmode="iothread"),
        args("-global", "virtio-net-pci.tx=timer", "-device", "virtio-net-pci,id=x,addr=0x10"),
        REFUSED,
        "txmode-not-allowed",
        "-global virtio-net-pci.tx=timer",
        ("bh", "timer"),
    ),
    Route(
        # QEMU builds -net nic devices itself, with the machine, before libvirt's -device ones:
        # QEMU 7.2 honours addr=, QEMU 10 takes the first free slot (2) whatever it says, so
        # libvirt's devices keep off slot 2 (the NIC on 3, no balloon). The NIC's own tx (bh)
        # beats the -global; the legacy NIC's does not.
        "legacy-net-nic",
        nic(10, txmode="iothread", slot=3),
        args("-global", "virtio-net-pci.tx=timer", "-net", "nic,model=virtio,addr=0x10"),
        REFUSED,
        "passthrough-unverifiable",
        "-net nic,model=virtio,addr=0x10",
        ("bh", "timer"),
        balloon=False,
    ),
    Route(
        "override-removes-tx",
        nic(11, txmode="iothread"),
        override("net0", ("tx", "remove", None)) + args("-global", "virtio-net-pci.tx=timer"),
        REFUSED,
        "txmode-not-allowed",
        "-global virtio-net-pci.tx=timer",
        ("timer",),
    ),
    Route(
        "override-e1000-to-virtio",
        nic(12, model="e1000"),
        override("net0", ("driver", "string", "virtio-net-pci"), ("tx", "string", "timer")),
        REFUSED,
        "txmode-not-allowed",
        "<qemu:override> of device 'net0'",
        ("timer",),
    ),
    Route(
        "global-split-across-elements",
        nic(13),
        args("-global") + args("virtio-net-pci.tx=timer"),
        REFUSED,
        "txmode-not-allowed",
        "-global virtio-net-pci.tx=timer",
        ("timer",),
    ),
    Route(
        # libvirt 9.0 passes its own devices to QEMU 7.2 as JSON: -set cannot find net0.
        "set-on-json-nic",
        nic(14),
        args("-set", "device.net0.tx=timer"),
        QEMU_EXITS,
        "start-will-fail",
        "-set device.net0.tx=timer",
    ),
    Route(
        # ... unless <qemu:capabilities> takes the capability away: then libvirt passes
        # QemuOpts, and the -set reaches the NIC.
        "set-on-qemuopts-nic",
        nic(21, txmode="iothread"),
        args("-set", "device.net0.tx=timer")
        + "<qemu:capabilities><qemu:del capability='device.json+hotplug'/></qemu:capabilities>",
        REFUSED,
        "txmode-not-allowed",
        "-set device.net0.tx=timer",
        ("timer",),
    ),
    Route(
        "global-reaches-the-second-nic",
        nic(22, txmode="iothread") + nic(23),
        args("-global", "virtio-net-pci.tx=timer"),
        REFUSED,
        "txmode-not-allowed",
        "-global virtio-net-pci.tx=timer",
        ("bh", "timer"),
    ),
    # The routes the gate already held.
    Route(
        "held-global-virtio-net-pci",
        nic(15),
        args("-global", "virtio-net-pci.tx=timer"),
        REFUSED,
        "txmode-not-allowed",
        "-global virtio-net-pci.tx=timer",
        ("timer",),
    ),
    Route(
        "held-device-non-transitional",
        nic(16, txmode="iothread"),
        args("-device", "virtio-net-pci-non-transitional,id=x,addr=0x10,tx=timer"),
        REFUSED,
        "txmode-not-allowed",
        "-device virtio-net-pci-non-transitional,id=x,addr=0x10,tx=timer",
        ("bh", "timer"),
    ),
    # Provably harmless: these must start, untouched, with no finding.
    Route(
        "harmless-global-ich9",
        nic(17),
        args("-global", "ICH9-LPC.disable_s3=1"),
        STARTS,
        open_tx=("",),
    ),
    Route(
        "harmless-fw-cfg",
        nic(18, txmode="iothread"),
        args("-fw_cfg", "name=opt/x,string=y"),
        STARTS,
        open_tx=("bh",),
    ),
    Route(
        "harmless-ivshmem",
        nic(19),
        args(
            "-object",
            "memory-backend-ram,id=shm0,size=1M",
            "-device",
            "ivshmem-plain,memdev=shm0,id=shm,addr=0x10",
        ),
        STARTS,
        open_tx=("",),
    ),
    Route(
        # A device's own tx beats every -global (the proxy sets it after the inner device took
        # its globals): QEMU keeps the NIC's bh.
        "harmless-global-under-own-tx",
        nic(24, txmode="iothread"),
        args("-global", "virtio-net-device.tx=timer", "-global", "virtio-net-pci.tx=timer"),
        STARTS,
        open_tx=("bh",),
    ),
    Route(
        "harmless-extra-device-default-tx",
        nic(25, txmode="iothread"),
        args("-device", "virtio-net-pci,id=x,addr=0x10"),
        STARTS,
        open_tx=("", "bh"),
    ),
    Route(
        # tx of a virtio-pci type no virtio-net device descends from, of which the domain has no
        # device (no balloon), and another property of virtio-net-pci. Not e1000: QEMU 10 refuses
        # a -global of a property a NIC model lacks even with no such device (7.2 ignores it).
        "harmless-global-other-property",
        nic(20),
        args("-global", "virtio-net-pci.mq=off", "-global", "virtio-balloon-pci.tx=timer"),
        STARTS,
        open_tx=("",),
        balloon=False,
    ),
)


def domain_xml(name: str, route: Route, config: Path) -> str:
    balloon = "" if route.balloon else "<memballoon model='none'/>"
    extra = route.extra.replace(READCONFIG, str(config))
    return (
        f"<domain type='qemu' xmlns:qemu='{QEMU_NS}'><name>{name}</name>"
        "<memory unit='MiB'>128</memory><os><type arch='x86_64'>hvm</type></os>"
        f"<devices>{route.nics}{balloon}</devices>{extra}</domain>"
    )


# --- what the tools say --------------------------------------------------------------------------


def audit(
    names: Sequence[str], policy: Path, base: Path, snapshot: Path
) -> dict[str, list[dict[str, object]]]:
    command = [
        str(env.VENV_BIN / "libvirt-txmode"), "audit", "-p", str(policy), "-f", "json",
        "--cache-dir", str(base / "audit-cache"), "--no-color",
    ]  # fmt: skip
    if snapshot.exists():  # the one the hook believes
        command += ["--snapshot", str(snapshot)]
    for name in names:
        command += ["-d", name]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)
    assert result.returncode in (0, 1), result.stderr
    return findings_by_file(result)


# --- the run -------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """Everything one route's domain got from QEMU, the hook and the tools."""

    name: str = ""
    config: str = ""  # the -readconfig file's path (gone after the run)
    open_start: Optional[Start] = None
    open_audit: dict[str, list[dict[str, object]]] = field(default_factory=dict)
    gated_start: Optional[Start] = None
    validate_written: list[dict[str, object]] = field(default_factory=list)
    validate_formatted: list[dict[str, object]] = field(default_factory=list)
    audit: dict[str, list[dict[str, object]]] = field(default_factory=dict)


def _readconfig(directory: Path) -> Path:
    # QEMU runs as libvirt's qemu user: the file and its directory must be readable to it.
    directory.chmod(0o755)
    path = directory / "tx.cfg"
    path.write_text('[global]\n  driver = "virtio-net-pci"\n  property = "tx"\n  value = "timer"\n')
    path.chmod(0o644)
    return path


def _run(base: Path, config: Path, outcomes: dict[str, Outcome]) -> None:
    written_dir = base / "written"
    formatted_dir = base / "formatted"
    written_dir.mkdir()
    formatted_dir.mkdir()
    for route in ROUTES:
        outcome = outcomes[route.name]
        outcome.config = str(config)
        path = written_dir / f"{outcome.name}.xml"
        path.write_text(domain_xml(outcome.name, route, config))
        env.virsh("define", str(path))
    names = [outcomes[route.name].name for route in ROUTES]
    site_policy = base / "site-policy.yaml"
    site_policy.write_text(SITE_POLICY)
    site_policy.chmod(0o644)
    with env.installed_hook(base, OPEN_POLICY):
        policy = base / "etc" / "policy.yaml"
        snapshot = base / "state" / "snapshot.json"
        # The gate open: QEMU shows what each route does; audit must see the running ones.
        for outcome, started in zip(outcomes.values(), start_all(names)):
            outcome.open_start = started
        running = [
            o.name for o in outcomes.values() if o.open_start and o.open_start.returncode == 0
        ]
        open_audit = audit(names, site_policy, base, snapshot)
        for outcome in outcomes.values():
            outcome.open_audit = {
                state: open_audit.get(f"{outcome.name} ({state} XML)", [])
                for state in ("inactive", "live")
                if f"{outcome.name} ({state} XML)" in open_audit
            }
        destroy_all(running)
        # The site's policy: the hook decides.
        policy.write_text(SITE_POLICY)
        for outcome, started in zip(outcomes.values(), start_all(names)):
            outcome.gated_start = started
        for outcome in outcomes.values():
            formatted = env.virsh("dumpxml", "--inactive", outcome.name).stdout
            (formatted_dir / f"{outcome.name}.xml").write_text(formatted)
        written = validate([written_dir / f"{n}.xml" for n in names], site_policy)
        formatted = validate([formatted_dir / f"{n}.xml" for n in names], site_policy)
        gated_audit = audit(names, site_policy, base, snapshot)
        running = [
            o.name for o in outcomes.values() if o.gated_start and o.gated_start.returncode == 0
        ]
        destroy_all(running)
        for outcome in outcomes.values():
            outcome.validate_written = written.get(str(written_dir / f"{outcome.name}.xml"), [])
            outcome.validate_formatted = formatted.get(
                str(formatted_dir / f"{outcome.name}.xml"), []
            )
            outcome.audit = {
                state: gated_audit.get(f"{outcome.name} ({state} XML)", [])
                for state in ("inactive", "live")
                if f"{outcome.name} ({state} XML)" in gated_audit
            }


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    env.require_libvirt()
    env.daemon_up()
    env.cleanup_leftovers()
    base = tmp_path_factory.mktemp("passthrough")
    tag = uuid.uuid4().hex[:6]
    result = {
        route.name: Outcome(name=f"{env.PREFIX}pt-{route.name}-{tag}"[:60]) for route in ROUTES
    }
    config_dir = Path(tempfile.mkdtemp(prefix="txmtest-readconfig-"))
    try:
        _run(base, _readconfig(config_dir), result)
    finally:
        for outcome in result.values():
            env.remove_domain(outcome.name)
        shutil.rmtree(config_dir, ignore_errors=True)
    return result


def _codes(found: Sequence[dict[str, object]]) -> set[tuple[object, object]]:
    return {(f["code"], f["level"]) for f in found}


def _expected_codes(route: Route) -> set[tuple[object, object]]:
    if route.verdict == STARTS:
        return set()
    level = "error" if route.verdict == REFUSED else "warning"
    return {(route.code, level)}


def _message_names(route: Route, found: Sequence[dict[str, object]], config: str) -> bool:
    named = route.named.replace(READCONFIG, config)
    return any(f["code"] == route.code and named in str(f["message"]) for f in found)


# --- the routes on real libvirt ------------------------------------------------------------------

IDS = [route.name for route in ROUTES]


@pytest.mark.parametrize("route", ROUTES, ids=IDS)
def test_the_route_is_real_with_the_gate_open(outcomes: dict[str, Outcome], route: Route) -> None:
    """Without the policy's objection QEMU gives each device the tx the route sets: the test of
    the gate below is not vacuous."""
    started = outcomes[route.name].open_start
    assert started is not None
    if route.verdict == QEMU_EXITS:
        assert started.returncode != 0
        assert 'there is no device "net0" defined' in started.stderr
        return
    assert started.returncode == 0, started.stderr
    assert tuple(sorted(started.tx.values())) == route.open_tx, started.tx


@pytest.mark.parametrize("route", ROUTES, ids=IDS)
def test_audit_reports_the_running_domain_that_got_the_route(
    outcomes: dict[str, Outcome], route: Route
) -> None:
    outcome = outcomes[route.name]
    if route.verdict == QEMU_EXITS:
        # It never ran: audit sees its inactive XML only, and says why it will not start.
        assert set(outcome.open_audit) == {"inactive"}
    else:
        assert set(outcome.open_audit) == {"inactive", "live"}
    for state, found in outcome.open_audit.items():
        assert _codes(found) == _expected_codes(route), (state, found)
        if route.verdict != STARTS:
            assert _message_names(route, found, outcome.config), (state, found)


@pytest.mark.parametrize("route", ROUTES, ids=IDS)
def test_the_hook_gives_the_routes_verdict_and_qemu_agrees(
    outcomes: dict[str, Outcome], route: Route
) -> None:
    started = outcomes[route.name].gated_start
    assert started is not None
    if route.verdict == REFUSED:
        assert started.returncode != 0, f"started, QEMU reports tx {started.tx}"
        assert f"[{route.code}" in started.stderr, started.stderr
        named = route.named.replace(READCONFIG, outcomes[route.name].config)
        assert named in started.stderr, started.stderr
        assert "qemu unexpectedly closed" not in started.stderr  # the hook refused, not QEMU
        return
    if route.verdict == QEMU_EXITS:
        assert started.returncode != 0
        assert 'there is no device "net0" defined' in started.stderr, started.stderr
        assert "txmode-not-allowed" not in started.stderr
        return
    assert started.returncode == 0, started.stderr
    assert started.tx, "a control without a virtio-net device proves nothing"
    assert all(tx in ALLOWED_TX for tx in started.tx.values()), started.tx


@pytest.mark.parametrize("route", ROUTES, ids=IDS)
def test_no_domain_starts_through_the_hook_with_a_forbidden_tx(
    outcomes: dict[str, Outcome], route: Route
) -> None:
    """The gate's promise, whatever the route was expected to do."""
    started = outcomes[route.name].gated_start
    assert started is not None
    assert all(tx in ALLOWED_TX for tx in started.tx.values()), started.tx


@pytest.mark.parametrize("route", ROUTES, ids=IDS)
@pytest.mark.parametrize("view", ["written", "formatted"])
def test_validate_domain_gives_the_hooks_verdict(
    outcomes: dict[str, Outcome], route: Route, view: str
) -> None:
    outcome = outcomes[route.name]
    found = outcome.validate_written if view == "written" else outcome.validate_formatted
    assert _codes(found) == _expected_codes(route), found
    if route.verdict != STARTS:
        assert _message_names(route, found, outcome.config), found


@pytest.mark.parametrize("route", ROUTES, ids=IDS)
def test_audit_gives_the_hooks_verdict(outcomes: dict[str, Outcome], route: Route) -> None:
    outcome = outcomes[route.name]
    # Defined domains in their inactive XML; the controls, running, in their live XML too.
    expected_states = {"inactive", "live"} if route.verdict == STARTS else {"inactive"}
    assert set(outcome.audit) == expected_states
    for state, found in outcome.audit.items():
        assert _codes(found) == _expected_codes(route), (state, found)
        if route.verdict != STARTS:
            assert _message_names(route, found, outcome.config), (state, found)


# --- QEMU 7.2 alone: the option syntaxes, and what the engine computes from them ----------------

UNVERIFIABLE = "unverifiable"
EXITS = None  # QEMU refuses to start: the engine may say anything


@dataclass(frozen=True)
class Syntax:
    name: str
    command: str  # the arguments, separated by single spaces
    qemu: Optional[str]  # the tx QEMU gives the device at ``path``; EXITS: it refuses to start
    engine: Optional[str]  # the tx the engine computes ("" none), UNVERIFIABLE; None: any
    path: str = "/machine/peripheral/x"
    exits_with: str = ""  # part of QEMU's error when it refuses

    @property
    def args(self) -> list[str]:
        return self.command.split(" ")


# fmt: off
NET = "-device virtio-net-pci,id=x"
SYNTAXES = (
    # -device as QemuOpts: the implied driver, driver= anywhere (qemu_opts_to_qdict: the last
    # of a name counts), ',,' a literal comma, flags, the alias, --device.
    Syntax("device", "-device virtio-net-pci,id=x,tx=timer", "timer", "timer"),
    Syntax("device-driver-last", "-device tx=timer,id=x,driver=virtio-net-pci", "timer", "timer"),
    Syntax("device-driver-twice", "-device e1000,driver=virtio-net-pci,id=x,tx=timer", "timer", "timer"),
    Syntax("device-tx-twice", "-device virtio-net-pci,id=x,tx=timer,tx=bh", "bh", "bh"),
    Syntax("device-comma-escape", "-device virtio-net-pci,id=x,tx=timer,,", "timer,", "timer,"),
    Syntax("device-flag", "-device virtio-net-pci,id=x,tx", "on", "on"),
    Syntax("device-no-flag", "-device virtio-net-pci,id=x,notx", "off", "off"),
    Syntax("device-alias", "-device virtio-net,id=x,tx=timer", "timer", "timer"),
    Syntax("device-dashes", "--device virtio-net-pci,id=x,tx=timer", "timer", "timer"),
    # -device as JSON: QEMU's parser, either quote, its escapes; a duplicate key is an error.
    Syntax("json-single-quotes", "-device {'driver':'virtio-net-pci','id':'x','tx':'timer'}", "timer", "timer"),
    Syntax("json-mixed-quotes", """-device {'driver':"virtio-net-pci","id":'x','tx':"timer"}""", "timer", "timer"),
    Syntax("json-escapes", r"""-device {"driver":"virtio\u002dnet-pci","id":"x",'tx':'tim\u0065r'}""", "timer", "timer"),
    Syntax("json-escaped-key", r"""-device {"driver":"virtio-net-pci","id":"x","t\u0078":"timer"}""", "timer", "timer"),
    Syntax("json-escaped-quote", r"""-device {'driver':'virtio-net-pci','id':'x','tx':'\'timer\''}""", "'timer'", "'timer'"),
    Syntax("json-duplicate-key", '-device {"driver":"virtio-net-pci","id":"x","tx":"bh","tx":"timer"}', EXITS, UNVERIFIABLE, exits_with="duplicate key"),
    # -global: both forms, through the type ancestry, QEMU's precedence.
    Syntax("global", f"-global virtio-net-pci.tx=timer {NET}", "timer", "timer"),
    Syntax("global-dashes", f"--global virtio-net-pci.tx=timer {NET}", "timer", "timer"),
    Syntax("global-inner-device", f"-global virtio-net-device.tx=timer {NET}", "timer", "timer"),
    Syntax("global-abstract-base", f"-global virtio-net-pci-base.tx=timer {NET}", "timer", "timer"),
    Syntax("global-virtio-pci", f"-global virtio-pci.tx=timer {NET}", "timer", "timer"),
    Syntax("global-long", f"-global property=tx,value=timer,driver=virtio-net-pci {NET}", "timer", "timer"),
    Syntax("global-long-driver-twice", f"-global driver=e1000,property=tx,value=timer,driver=virtio-net-pci {NET}", "timer", "timer"),
    # The short form takes the rest verbatim: no ',,' unescaping there, unlike the long form.
    Syntax("global-short-commas-verbatim", f"-global virtio-net-pci.tx=timer,,x {NET}", "timer,,x", "timer,,x"),
    Syntax("global-long-comma-escape", f"-global driver=virtio-net-pci,property=tx,value=timer,,x {NET}", "timer,x", "timer,x"),
    Syntax("global-alias-is-no-type", f"-global virtio-net.tx=timer {NET}", "", ""),
    Syntax("global-sibling-type", "-global virtio-net-pci.tx=timer -device virtio-net-pci-non-transitional,id=x", "", ""),
    Syntax("global-after-device", f"{NET} -global virtio-net-pci.tx=timer", "timer", "timer"),
    Syntax("global-later-wins", f"-global virtio-net-pci.tx=timer -global virtio-net-pci.tx=bh {NET}", "bh", "bh"),
    Syntax("global-proxy-beats-inner", f"-global virtio-net-pci.tx=bh -global virtio-net-device.tx=timer {NET}", "bh", "bh"),
    Syntax("global-own-tx-wins", "-global virtio-net-device.tx=timer -device virtio-net-pci,id=x,tx=bh", "bh", "bh"),
    # qemu_global_option's sscanf("%63[^.=].%63[^=]"): a 64-character type is no short form.
    Syntax("global-63-character-type", f"-global {'v' * 63}.tx=timer {NET}", "", ""),
    Syntax("global-64-character-type", f"-global {'v' * 64}.tx=timer {NET}", EXITS, None, exits_with="Invalid parameter"),
    Syntax("global-trailing", f"{NET} -global", EXITS, UNVERIFIABLE, exits_with="requires an argument"),
    # -set: a QemuOpts device before it, by its first id ('noid' is the flag id=off).
    Syntax("set", f"{NET} -set device.x.tx=timer", "timer", "timer"),
    Syntax("set-verbatim", f"{NET} -set device.x.tx=timer,,x", "timer,,x", "timer,,x"),
    Syntax("set-driver", "-device e1000,id=x -set device.x.driver=virtio-net-pci -set device.x.tx=timer", "timer", "timer"),
    Syntax("set-first-id", "-device virtio-net-pci,id=x,id=y -set device.x.tx=timer", "timer", "timer"),
    Syntax("set-noid", "-device virtio-net-pci,noid -set device.off.tx=timer", "timer", "timer", path="/machine/peripheral/off"),
    Syntax("set-other-property", "-device virtio-net-pci,id=x,tx=bh -set device.x.mq=on", "bh", "bh"),
    Syntax("set-before-device", f"-set device.x.tx=timer {NET}", EXITS, UNVERIFIABLE, exits_with='there is no device "x" defined'),
    Syntax("set-json-device", '-device {"driver":"virtio-net-pci","id":"x"} -set device.x.tx=timer', EXITS, UNVERIFIABLE, exits_with='there is no device "x" defined'),
    Syntax("set-a-global", f"-global id=g,driver=virtio-net-pci,property=tx,value=bh -set global.g.value=timer {NET}", "timer", UNVERIFIABLE),
    Syntax("unknown-option", f"{NET} -no-such-option", EXITS, UNVERIFIABLE, exits_with="invalid option"),
    Syntax("three-dashes", f"---global virtio-net-pci.tx=timer {NET}", EXITS, UNVERIFIABLE, exits_with="---global: invalid option"),
    # What the classifier drops because QEMU refuses it (tests/test_qemu_args.py says why).
    Syntax("global-long-stray-flag", f"-global driver=virtio-net-pci,property=tx,value=timer,nothing {NET}", EXITS, None, exits_with="Invalid parameter 'thing'"),
    Syntax("global-long-no-value", f"-global driver=virtio-net-pci,property=tx {NET}", EXITS, None, exits_with="'driver', 'property', and 'value' are required"),
    Syntax("global-dotted-property", f"-global virtio-net-pci.x.tx=timer {NET}", EXITS, None, exits_with="Property 'virtio-net-pci.x.tx' not found"),
    Syntax("device-escaped-driver", "-device virtio-net-pci,,tx=timer,id=x", EXITS, None, exits_with="'virtio-net-pci,tx=timer' is not a valid device model name"),
    Syntax("device-no-driver", "-device id=x,tx=timer", EXITS, None, exits_with="Parameter 'driver' is missing"),
    Syntax("json-driver-not-a-string", '-device {"driver":1,"id":"x","tx":"timer"}', EXITS, None, exits_with="Parameter 'driver' is missing"),
    Syntax("json-two-values", '-device {"driver":"virtio-net-pci","id":"x"}{"tx":"timer"}', EXITS, None, exits_with="Expecting at most one JSON value"),
    Syntax("set-dotted-property", f"{NET} -set device.x.tx.y=timer", EXITS, None, exits_with="Property 'virtio-net-pci.tx.y' not found"),
    Syntax("set-cannot-parse", f"{NET} -set device.x=timer", EXITS, None, exits_with="can't parse"),
    Syntax("set-an-object", f"{NET} -set object.x.tx=timer", EXITS, None, exits_with="-set is not supported with object"),
)
# fmt: on


def run_qemu(extra: Sequence[str], path: str) -> tuple[int, str, Optional[str]]:
    """QEMU 7.2 (pc machine, TCG, stopped before the guest runs): its exit status, stderr and
    the tx of the device at ``path`` (QMP qom-get)."""
    commands = [
        {"execute": "qmp_capabilities"},
        {"execute": "qom-get", "arguments": {"path": path, "property": "tx"}},
        {"execute": "quit"},
    ]
    result = subprocess.run(
        [
            QEMU, "-machine", "pc", "-accel", "tcg", "-nodefaults", "-S", "-display", "none",
            "-qmp", "stdio", *extra,
        ],
        input="".join(json.dumps(c) + "\n" for c in commands),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"},
    )  # fmt: skip
    replies = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    answers = [r for r in replies if "return" in r or "error" in r]
    tx = None
    if len(answers) >= 2 and "return" in answers[1]:
        tx = answers[1]["return"]
    return result.returncode, result.stderr, tx


def engine_tx(extra: Sequence[str]) -> str:
    """What the engine computes for the one virtio-net device these arguments make: its tx in
    QEMU's words ("" none), or UNVERIFIABLE."""
    parsed = parse_commandline([(arg, number + 1) for number, arg in enumerate(extra)])
    domain = Domain(name="syntax", file="syntax.xml", line=1, arch="x86_64", qemu_args=parsed)
    result = resolve(domain, HostCapabilities(name="here", arch="x86_64"), ())
    if result.unprovable:
        return UNVERIFIABLE
    assert len(result.extra) == 1, result.extra
    txmode = result.extra[0].txmode
    return {None: "", "iothread": "bh"}.get(txmode, txmode or "")


@pytest.fixture(scope="module")
def qemu() -> None:
    if not os.path.exists(QEMU):
        env.skip_unless_ci(f"needs {QEMU} (scripts/apt-deps installs qemu-system-x86)")


@pytest.mark.qemu
@pytest.mark.parametrize("syntax", SYNTAXES, ids=[s.name for s in SYNTAXES])
def test_the_engine_reads_each_syntax_as_qemu_does(qemu: None, syntax: Syntax) -> None:
    returncode, stderr, tx = run_qemu(syntax.args, syntax.path)
    if syntax.qemu is EXITS:
        assert returncode != 0 and tx is None, (returncode, tx)
        assert syntax.exits_with in stderr, stderr
    else:
        assert returncode == 0, stderr
        assert tx == syntax.qemu
    if syntax.engine is not None:
        assert engine_tx(syntax.args) == syntax.engine
    if syntax.qemu is not EXITS:
        # The gate's promise: what QEMU does is computed, or the argument is unverifiable.
        assert engine_tx(syntax.args) in (tx, UNVERIFIABLE)


def test_readconfig_sets_a_global_from_a_file(qemu: None, tmp_path: Path) -> None:
    config = tmp_path / "tx.cfg"
    config.write_text(
        '[global]\n  driver = "virtio-net-pci"\n  property = "tx"\n  value = "timer"\n'
    )
    extra = ("-readconfig", str(config), "-device", "virtio-net-pci,id=x")
    assert run_qemu(extra, "/machine/peripheral/x")[::2] == (0, "timer")
    assert engine_tx(extra) == UNVERIFIABLE
