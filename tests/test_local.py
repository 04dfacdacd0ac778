"""local.py: trust, then the snapshot (same binary only), the cache, one probe per emulator."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Optional

import pytest

from libvirt_txmode.engine.domain_xml import Domain, Nic
from libvirt_txmode.engine.model import Guest, HostCapabilities, Support, SupportState
from libvirt_txmode.engine.policy import Policy
from libvirt_txmode.host.emulator import identify
from libvirt_txmode.host.facts import local_capabilities, needed_devices
from libvirt_txmode.host.probe import ProbeResult
from libvirt_txmode.host.probe_cache import ProbeCache
from tests.fakes import FakeEmulators, make_fakes, processes_with, read

AS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="owner checks need root")


@pytest.fixture
def fakes() -> Iterator[FakeEmulators]:
    yield from make_fakes()


@pytest.fixture
def policy(fakes: FakeEmulators) -> Policy:
    return Policy(emulators=(fakes.glob,), probe_timeout=2.0)


class CountingProber:
    """Stands in for qemu.probe_emulator and records each call (and whether it asked for the
    ancestry, which it then answers with ``ancestry``)."""

    def __init__(
        self,
        state: SupportState = SupportState.SUPPORTED,
        detail: str = "probed",
        ancestry: Optional[dict[str, tuple[str, ...]]] = None,
    ) -> None:
        self.calls: list[tuple[str, tuple[str, ...]]] = []
        self.asked_ancestry: list[bool] = []
        self.state, self.detail, self.ancestry = state, detail, ancestry

    def __call__(
        self, emulator: str, devices: Sequence[str], timeout: float, *, ancestry: bool
    ) -> ProbeResult:
        self.calls.append((emulator, tuple(devices)))
        self.asked_ancestry.append(ancestry)
        answers = {d: Support(self.state, self.detail, "help") for d in devices}
        return ProbeResult(answers, self.ancestry if ancestry else None)


def domain(
    name: str,
    emulator: Optional[str],
    *models: str,
    txmode: Optional[str] = "iothread",
    arch: str = "x86_64",
) -> Domain:
    nics = tuple(
        Nic(index=i, line=10 + i, type="user", model=model, txmode=txmode)
        for i, model in enumerate(models or ("virtio",))
    )
    return Domain(name=name, file=f"{name}.xml", line=1, arch=arch, emulator=emulator, nics=nics)


def probed(detail: str = "probed") -> Support:
    return Support(SupportState.SUPPORTED, detail, "help")


def no_which(_name: str) -> Optional[str]:
    return None


def test_needed_devices() -> None:
    one = domain("one", "/e", "virtio", "virtio-transitional", "e1000")
    quiet = domain("quiet", "/e", "virtio", txmode=None)
    s390 = domain("s390", "/e", "virtio", arch="s390x")
    host = HostCapabilities(name="h", arch="x86_64")
    assert needed_devices([one, quiet, s390], host) == [
        {"virtio-net-pci", "virtio-net-pci-transitional"},
        set(),
        {"virtio-net-ccw"},
    ]


def test_needed_devices_is_linear_in_nics() -> None:
    # 5,000 NICs (a layout libvirt accepts): one plan per NIC, no per-NIC hashing of the domain.
    many = domain("many", "/e", *(["virtio"] * 5000))
    calls = []

    class Counting(Domain):
        def __hash__(self) -> int:
            calls.append(1)
            return super().__hash__()

    counted = Counting(**{f.name: getattr(many, f.name) for f in dataclasses.fields(many)})
    assert needed_devices([counted], HostCapabilities(name="h", arch="x86_64")) == [
        {"virtio-net-pci"}
    ]
    assert calls == []


def test_one_probe_per_emulator_across_many_domains(fakes: FakeEmulators, policy: Policy) -> None:
    first = str(fakes.script("qemu-a", "exit 0\n"))
    second = str(fakes.script("qemu-b", "exit 0\n"))
    domains = [domain(f"a{i}", first, "virtio", "virtio-transitional") for i in range(20)]
    domains += [domain(f"b{i}", second, "virtio") for i in range(5)]
    domains += [domain("quiet", second, "virtio-non-transitional", txmode=None)]
    prober = CountingProber()
    caps = local_capabilities(domains, policy, ProbeCache(None), name="host1", prober=prober)
    assert prober.calls == [
        (first, ("virtio-net-pci", "virtio-net-pci-transitional")),
        (second, ("virtio-net-pci",)),
    ]
    assert caps.name == "host1"
    assert caps.emulator_errors == {}
    assert caps.support(domains[0], "virtio-net-pci-transitional") == (first, probed())
    assert caps.support(domains[-1], "virtio-net-pci-non-transitional") == (
        second,
        Support(
            SupportState.UNKNOWN, f"virtio-net-pci-non-transitional was not probed on {second}"
        ),
    )


def test_nothing_to_probe_without_txmode(fakes: FakeEmulators, policy: Policy) -> None:
    prober = CountingProber()
    emulator = str(fakes.script("qemu-a", "exit 0\n"))
    local_capabilities(
        [domain("quiet", emulator, txmode=None)], policy, ProbeCache(None), prober=prober
    )
    assert prober.calls == []


def test_warm_cache_means_no_probe(fakes: FakeEmulators, policy: Policy, tmp_path: Path) -> None:
    emulator = str(fakes.script("qemu-a", "exit 0\n"))
    domains = [domain("vm", emulator, "virtio", "virtio-transitional")]
    cache = ProbeCache(str(tmp_path / "cache"))
    cold = CountingProber()
    first = local_capabilities(domains, policy, cache, prober=cold)
    assert len(cold.calls) == 1
    warm = CountingProber(detail="should not be asked")
    second = local_capabilities(domains, policy, ProbeCache(str(tmp_path / "cache")), prober=warm)
    assert warm.calls == []
    assert (
        second.devices
        == first.devices
        == {emulator: {"virtio-net-pci": probed(), "virtio-net-pci-transitional": probed()}}
    )
    # A device the cache has not seen yet is probed alone.
    more = [domain("vm2", emulator, "virtio-non-transitional")]
    local_capabilities(more, policy, cache, prober=warm)
    assert warm.calls == [(emulator, ("virtio-net-pci-non-transitional",))]


def _snapshot(emulator: str, detail: str = "from snapshot", **devices: Support) -> HostCapabilities:
    recorded = devices or {"virtio-net-pci": probed(detail)}
    return HostCapabilities(name="host1", devices={emulator: recorded})


def test_snapshot_with_matching_identity_means_no_probe(
    fakes: FakeEmulators, policy: Policy, tmp_path: Path
) -> None:
    emulator = str(fakes.script("qemu-a", "exit 0\n"))
    prober = CountingProber()
    caps = local_capabilities(
        [domain("vm", emulator)],
        policy,
        ProbeCache(str(tmp_path / "cache")),
        snapshot=_snapshot(emulator),
        snapshot_identities={emulator: identify(emulator).key()},
        prober=prober,
    )
    assert prober.calls == []
    assert caps.devices == {emulator: {"virtio-net-pci": probed("from snapshot")}}
    assert not (tmp_path / "cache").exists()  # the cache is not even looked at


def test_snapshot_of_another_build_is_ignored(fakes: FakeEmulators, policy: Policy) -> None:
    path = fakes.script("qemu-a", "exit 0\n")
    emulator = str(path)
    recorded = identify(emulator).key()
    path.write_text("#!/bin/sh\n# upgraded\nexit 0\n")
    prober = CountingProber()
    caps = local_capabilities(
        [domain("vm", emulator)],
        policy,
        ProbeCache(None),
        snapshot=_snapshot(emulator),
        snapshot_identities={emulator: recorded},
        prober=prober,
    )
    assert prober.calls == [(emulator, ("virtio-net-pci",))]
    assert caps.devices == {emulator: {"virtio-net-pci": probed()}}


def test_snapshot_gaps_and_unknowns_are_probed(fakes: FakeEmulators, policy: Policy) -> None:
    emulator = str(fakes.script("qemu-a", "exit 0\n"))
    snapshot = _snapshot(
        emulator,
        **{
            "virtio-net-pci": probed("from snapshot"),
            "virtio-net-pci-transitional": Support(SupportState.UNKNOWN, "timed out then"),
        },
    )
    prober = CountingProber()
    caps = local_capabilities(
        [domain("vm", emulator, "virtio", "virtio-transitional", "virtio-non-transitional")],
        policy,
        ProbeCache(None),
        snapshot=snapshot,
        snapshot_identities={emulator: identify(emulator).key()},
        prober=prober,
    )
    assert prober.calls == [
        (emulator, ("virtio-net-pci-non-transitional", "virtio-net-pci-transitional"))
    ]
    assert caps.devices[emulator] == {
        "virtio-net-pci": probed("from snapshot"),
        "virtio-net-pci-transitional": probed(),
        "virtio-net-pci-non-transitional": probed(),
    }


def test_missing_emulator_is_unknown_with_reason(
    fakes: FakeEmulators, policy: Policy, caplog: pytest.LogCaptureFixture
) -> None:
    missing = f"{fakes.directory}/qemu-system-gone"
    vm = domain("vm", missing)
    prober = CountingProber()
    caps = local_capabilities([vm], policy, ProbeCache(None), prober=prober)
    reason = f"emulator {missing} is not accessible: No such file or directory"
    assert prober.calls == []
    assert caps.emulator_errors == {missing: reason}
    assert caps.support(vm, "virtio-net-pci") == (missing, Support(SupportState.UNKNOWN, reason))
    assert reason in caplog.text


def test_no_emulator_for_the_arch(policy: Policy) -> None:
    vm = domain("vm", None, arch="riscv64")
    prober = CountingProber()
    caps = local_capabilities(
        [vm], policy, ProbeCache(None), name="h", which=no_which, prober=prober
    )
    assert prober.calls == []
    assert caps.support(vm, "virtio-net-device") == (
        None,
        Support(SupportState.UNKNOWN, "no emulator for arch riscv64 on h"),
    )


def test_default_emulator_from_search_path(fakes: FakeEmulators, policy: Policy) -> None:
    emulator = str(fakes.script("qemu-system-x86_64", "exit 0\n"))
    asked: list[str] = []

    def which(name: str) -> Optional[str]:
        asked.append(name)
        return emulator

    vm = domain("vm", None)
    prober = CountingProber()
    caps = local_capabilities([vm], policy, ProbeCache(None), which=which, prober=prober)
    assert asked == ["qemu-system-x86_64"]
    assert caps.guests == (Guest("x86_64", emulator, ("qemu",)),)
    assert caps.support(vm, "virtio-net-pci") == (emulator, probed())


def test_default_emulator_from_snapshot_guests(fakes: FakeEmulators, policy: Policy) -> None:
    emulator = str(fakes.script("qemu-system-x86_64", "exit 0\n"))
    snapshot = HostCapabilities(name="h", guests=(Guest("x86_64", emulator, ("qemu", "kvm")),))
    prober = CountingProber()
    caps = local_capabilities(
        [domain("vm", None)],
        policy,
        ProbeCache(None),
        snapshot=snapshot,
        which=no_which,
        prober=prober,
    )
    assert prober.calls == [(emulator, ("virtio-net-pci",))]
    # The snapshot's guest lines are kept as they are: they name the emulator libvirt would pick.
    assert caps.guests == (Guest("x86_64", emulator, ("qemu", "kvm")),)


def test_untrusted_emulator_is_never_probed(fakes: FakeEmulators, tmp_path: Path) -> None:
    emulator = str(fakes.script("qemu-a", "exit 0\n"))
    policy = Policy(emulators=("/usr/bin/qemu-system-*",))
    vm = domain("vm", emulator)
    prober = CountingProber()
    caps = local_capabilities([vm], policy, ProbeCache(str(tmp_path / "c")), prober=prober)
    reason = f"emulator {emulator} is not in the policy's trusted 'emulators' list"
    assert prober.calls == []
    assert caps.support(vm, "virtio-net-pci") == (emulator, Support(SupportState.UNKNOWN, reason))


# --- with the real prober: what is untrusted is never executed ---------------------------------


def test_trusted_fake_does_run(fakes: FakeEmulators, policy: Policy) -> None:
    # The control for the tests below: the evidence file appears when a fake does run (as nobody).
    script, evidence = fakes.touching("qemu-trusted")
    caps = local_capabilities([domain("vm", str(script))], policy, ProbeCache(None))
    assert evidence.exists()
    assert caps.devices == {
        str(script): {
            "virtio-net-pci": probed("tx listed by -device virtio-net-pci,help"),
        }
    }


def _never_runs(fakes: FakeEmulators, policy: Policy, script: Path, evidence: Path) -> str:
    vm = domain("vm", str(script))
    caps = local_capabilities([vm], policy, ProbeCache(None))
    assert not evidence.exists()
    emulator, support = caps.support(vm, "virtio-net-pci")
    assert (emulator, support.state) == (str(script), SupportState.UNKNOWN)
    return support.detail


def test_outside_globs_never_runs(fakes: FakeEmulators, policy: Policy, tmp_path: Path) -> None:
    outside = fakes.directory.parent / "elsewhere"
    outside.mkdir(mode=0o755)
    script, evidence = fakes.touching("qemu-outside", directory=outside)
    assert _never_runs(fakes, policy, script, evidence) == (
        f"emulator {script} is not in the policy's trusted 'emulators' list"
    )


def test_symlink_out_of_globs_is_judged_by_target(fakes: FakeEmulators, policy: Policy) -> None:
    # A trusted name pointing at a file someone else owns: the target's owner decides.
    outside = fakes.directory.parent / "elsewhere"
    outside.mkdir(mode=0o755)
    target, evidence = fakes.touching("qemu-target", directory=outside, mode=0o777)
    link = fakes.directory / "qemu-link"
    link.symlink_to(target)
    assert _never_runs(fakes, policy, link, evidence) == (
        f"emulator {link} is not trusted: file {target} is writable by group or others "
        f"(mode 0777); fix: chmod go-w {target}: refusing to run it"
    )


@AS_ROOT
def test_not_owned_by_root_never_runs(fakes: FakeEmulators, policy: Policy) -> None:
    script, evidence = fakes.touching("qemu-nobody", uid=65534)
    assert _never_runs(fakes, policy, script, evidence) == (
        f"emulator {script} is not trusted: file {script} is owned by uid 65534, not root; "
        f"fix: chown root {script}: refusing to run it"
    )


@pytest.mark.parametrize("mode", [0o775, 0o757])
def test_writable_by_others_never_runs(fakes: FakeEmulators, policy: Policy, mode: int) -> None:
    script, evidence = fakes.touching(f"qemu-{mode:o}", mode=mode)
    assert _never_runs(fakes, policy, script, evidence) == (
        f"emulator {script} is not trusted: file {script} is writable by group or others "
        f"(mode {mode:04o}); fix: chmod go-w {script}: refusing to run it"
    )


# --- with the real prober: misbehaving emulators ----------------------------------------------


def test_real_prober_result_is_cached(fakes: FakeEmulators, policy: Policy, tmp_path: Path) -> None:
    runs = fakes.dropbox / "runs"
    out = fakes.data("help", read("7.2-virtio-net-pci-help.stdout"))
    script = fakes.script("qemu-counted", f"echo run >> {runs}\ncat {out}\n")
    vm = domain("vm", str(script))
    for _ in range(3):
        caps = local_capabilities([vm], policy, ProbeCache(str(tmp_path / "cache")))
        assert caps.support(vm, "virtio-net-pci") == (
            str(script),
            probed("tx listed by -device virtio-net-pci,help"),
        )
        # A fake that prints help for anything answers no qom-list-types: no ancestry, and
        # that alone never makes a probe.
        assert caps.ancestry == {}
    # The first probe: -device help, then one QMP session for the ancestry. Then never again.
    assert runs.read_text() == "run\nrun\n"


def test_hanging_emulator_is_unknown(fakes: FakeEmulators, tmp_path: Path) -> None:
    sleep_args = fakes.sleep_args()
    script = fakes.script("qemu-hang", f"trap '' TERM\nsleep {sleep_args}\n")
    policy = Policy(emulators=(fakes.glob,), probe_timeout=0.5)
    vm = domain("vm", str(script))
    caps = local_capabilities([vm], policy, ProbeCache(str(tmp_path / "cache")))
    assert caps.support(vm, "virtio-net-pci") == (
        str(script),
        Support(
            SupportState.UNKNOWN,
            f"{script} -device virtio-net-pci,help did not finish within 0.5 s",
        ),
    )
    assert processes_with(sleep_args) == []
    assert [p.suffix for p in (tmp_path / "cache").iterdir()] == [".lock"]  # nothing cached


def test_binary_replaced_while_probing_is_not_cached(
    fakes: FakeEmulators, policy: Policy, tmp_path: Path
) -> None:
    path = fakes.script("qemu-a", "exit 0\n")
    emulator = str(path)

    def replacing_prober(
        emu: str, devices: Sequence[str], timeout: float, *, ancestry: bool
    ) -> ProbeResult:
        fresh = fakes.directory / "qemu-a.new"
        fresh.write_text("#!/bin/sh\n# a new build\nexit 0\n")
        os.chmod(fresh, 0o755)
        os.replace(fresh, path)  # a package upgrade renames the new binary into place
        return ProbeResult({d: probed() for d in devices})

    vm = domain("vm", emulator)
    cache_dir = tmp_path / "cache"
    caps = local_capabilities([vm], policy, ProbeCache(str(cache_dir)), prober=replacing_prober)
    reason = f"emulator {emulator} changed while it was being probed"
    assert caps.support(vm, "virtio-net-pci") == (emulator, Support(SupportState.UNKNOWN, reason))
    assert [p.suffix for p in cache_dir.iterdir()] == [".lock"]
    prober = CountingProber()
    local_capabilities([vm], policy, ProbeCache(str(cache_dir)), prober=prober)
    assert prober.calls == [(emulator, ("virtio-net-pci",))]  # asked again, about the new build


def test_unusable_cache_still_decides(
    fakes: FakeEmulators, policy: Policy, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    emulator = str(fakes.script("qemu-a", "exit 0\n"))
    vm = domain("vm", emulator)
    prober = CountingProber()
    caps = local_capabilities([vm], policy, ProbeCache(str(blocker)), prober=prober)
    assert caps.support(vm, "virtio-net-pci") == (emulator, probed())
    assert f"probe cache {blocker} is not a directory: ignored" in caplog.text
