"""The compiled policy copy: used only when fresh and trustworthy, always equal to the YAML."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable

import pytest

from libvirt_txmode.engine import policy, policy_compiled
from libvirt_txmode.engine.policy import Policy, PolicyError, load_policy
from libvirt_txmode.engine.policy_compiled import compiled_path, policy_from_json, policy_to_json
from libvirt_txmode.hook import protocol as hook

RICH_POLICY = """\
version: 1
action: audit
on_unknown: allow
on_error: allow
emulators: [/usr/bin/qemu-system-*, /opt/qemu/bin/qemu-*]
probe_timeout: 2.5
defaults:
  allowed: [iothread]
  require: true
  ineffective: error
rules:
  - name: storage
    match: {network: "storage*", model: virtio}
    allowed: [iothread]
    action: enforce
  - name: lab
    match: {domain: "lab-*", mac: "52:54:00:*", type: bridge, bridge: br0}
    require: false
    ineffective: ignore
    allowed: []
  - name: catch-all
"""

AS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown files")


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(RICH_POLICY)
    path.chmod(0o644)
    return path


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def yaml_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every time the YAML is parsed instead of the compiled copy read."""
    calls: list[str] = []
    parse = policy.parse_policy

    def counting(text: str, file: str, *, sha256: str = "") -> Policy:
        calls.append(file)
        return parse(text, file, sha256=sha256)

    monkeypatch.setattr(policy, "parse_policy", counting)
    return calls


def compiled_file(policy_file: Path, cache_dir: Path) -> Path:
    return Path(compiled_path(str(cache_dir), str(policy_file)))


def test_equal_to_load_policy_cold_and_warm(
    policy_file: Path, cache_dir: Path, yaml_loads: list[str]
) -> None:
    expected = load_policy(str(policy_file))
    assert load_policy(str(policy_file), str(cache_dir)) == expected
    assert compiled_file(policy_file, cache_dir).exists()
    assert load_policy(str(policy_file), str(cache_dir)) == expected
    assert yaml_loads == [str(policy_file)] * 2  # expected, then only the first cached run


WITH_EXCEPTIONS = (
    "version: 1\nexceptions:\n"
    "  - match: {domain: 'db-*', mac: '52:54:00:AA:*', rule: r, code: txmode-required}\n"
    "    reason: migration (OPS-9)\n    expires: 2027-03-31\n"
    "  - match: {domain: x}\n    reason: lab\n"
)


@pytest.mark.parametrize("text", [RICH_POLICY, "version: 1\n", None, WITH_EXCEPTIONS])
def test_json_round_trip(tmp_path: Path, text: str | None) -> None:
    if text is None:
        original = Policy()  # the built-in one
    else:
        path = tmp_path / "p.yaml"
        path.write_text(text)
        original = load_policy(str(path))
    assert policy_from_json(json.loads(json.dumps(policy_to_json(original)))) == original


def test_packaged_policy_round_trips(tmp_path: Path, cache_dir: Path) -> None:
    from libvirt_txmode.admin.hook_file import packaged

    path = tmp_path / "policy.yaml"
    path.write_text(packaged("policy.yaml"))
    expected = load_policy(str(path))
    load_policy(str(path), str(cache_dir))
    assert load_policy(str(path), str(cache_dir)) == expected


def test_without_cache_dir_it_is_load_policy(policy_file: Path, yaml_loads: list[str]) -> None:
    assert load_policy(str(policy_file)) == load_policy(str(policy_file))
    assert len(yaml_loads) == 2


def test_missing_cache_dir_is_created_private(policy_file: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "a" / "b"
    load_policy(str(policy_file), str(cache_dir))
    assert compiled_file(policy_file, cache_dir).stat().st_mode & 0o022 == 0
    assert cache_dir.stat().st_mode & 0o022 == 0


def test_edit_invalidates(policy_file: Path, cache_dir: Path, yaml_loads: list[str]) -> None:
    load_policy(str(policy_file), str(cache_dir))
    policy_file.write_text(RICH_POLICY.replace("action: audit", "action: enforce"))
    policy = load_policy(str(policy_file), str(cache_dir))
    assert policy.action == "enforce"
    assert len(yaml_loads) == 2
    assert load_policy(str(policy_file), str(cache_dir)).action == "enforce"
    assert len(yaml_loads) == 2  # recompiled, then used
    assert policy == load_policy(str(policy_file))


def test_same_size_edit_with_restored_mtime_invalidates(policy_file: Path, cache_dir: Path) -> None:
    load_policy(str(policy_file), str(cache_dir))
    before = policy_file.stat()
    edited = RICH_POLICY.replace("on_error: allow", "on_error: deny ")
    assert len(edited) == len(RICH_POLICY)
    policy_file.write_text(edited)
    os.utime(policy_file, ns=(before.st_atime_ns, before.st_mtime_ns))  # ctime still moves
    assert load_policy(str(policy_file), str(cache_dir)).on_error == "deny"


def test_replaced_file_invalidates(policy_file: Path, cache_dir: Path, tmp_path: Path) -> None:
    load_policy(str(policy_file), str(cache_dir))
    new = tmp_path / "new.yaml"
    new.write_text(RICH_POLICY.replace("probe_timeout: 2.5", "probe_timeout: 9"))
    os.replace(new, policy_file)
    assert load_policy(str(policy_file), str(cache_dir)).probe_timeout == 9.0


def test_other_tool_version_is_stale(
    policy_file: Path, cache_dir: Path, yaml_loads: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    load_policy(str(policy_file), str(cache_dir))
    monkeypatch.setattr(policy_compiled, "__version__", "99.0")
    load_policy(str(policy_file), str(cache_dir))
    assert len(yaml_loads) == 2


def _tamper(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(b"\x00garbage{"),
        lambda p: p.write_text(""),
        lambda p: p.write_text("[]"),
        lambda p: p.write_text('{"format": "libvirt-txmode-compiled-policy"}'),
        lambda p: _tamper(p, lambda d: d["policy"]["document"].update(action="bogus")),
        lambda p: _tamper(p, lambda d: d["policy"]["document"].update(probe_timeout=True)),
        lambda p: _tamper(p, lambda d: d["policy"]["document"].update(emulators=["relative/qemu"])),
        lambda p: _tamper(p, lambda d: d["policy"]["document"]["defaults"].update(allowed=["bh"])),
        lambda p: _tamper(p, lambda d: d["policy"]["document"]["defaults"].update(require="yes")),
        lambda p: _tamper(p, lambda d: d["policy"]["document"]["rules"][0].update(extra=1)),
        lambda p: _tamper(
            p, lambda d: d["policy"]["document"]["rules"][0]["match"].update(uuid="x")
        ),
        lambda p: _tamper(p, lambda d: d["policy"]["document"]["rules"][0].update(allowed="timer")),
        lambda p: _tamper(p, lambda d: d["policy"]["document"]["rules"][1].update(name="storage")),
        lambda p: _tamper(p, lambda d: d["policy"].update(source="/elsewhere.yaml")),
        lambda p: _tamper(p, lambda d: d.update(key="/other:1:2:3:4:5")),
        lambda p: _tamper(p, lambda d: d["policy"].update(rule_lines=[1])),
        lambda p: _tamper(p, lambda d: d["policy"]["document"].update(version=2)),
    ],
    ids=[
        "binary",
        "empty",
        "not-an-object",
        "no-fields",
        "bad-action",
        "bool-timeout",
        "relative-emulator",
        "bad-txmode",
        "string-bool",
        "unknown-field",
        "unknown-match-key",
        "override-not-list",
        "duplicate-rule",
        "other-source",
        "other-key",
        "rule-lines-mismatch",
        "other-version",
    ],
)
def test_corrupt_or_inconsistent_is_ignored_and_rebuilt(
    policy_file: Path, cache_dir: Path, yaml_loads: list[str], damage: Callable[[Path], None]
) -> None:
    expected = load_policy(str(policy_file), str(cache_dir))
    compiled = compiled_file(policy_file, cache_dir)
    damage(compiled)
    assert load_policy(str(policy_file), str(cache_dir)) == expected
    assert len(yaml_loads) == 2
    assert json.loads(compiled.read_text())["policy"] == policy_to_json(expected)  # rewritten


def _plant_lie(policy_file: Path, cache_dir: Path) -> Path:
    """A well-formed compiled copy with the right key whose content differs from the YAML."""
    load_policy(str(policy_file), str(cache_dir))
    compiled = compiled_file(policy_file, cache_dir)
    _tamper(compiled, lambda d: d["policy"]["document"].update(on_error="deny"))
    compiled.chmod(0o644)
    assert load_policy(str(policy_file), str(cache_dir)).on_error == "deny"  # it is trusted
    return compiled


def test_group_or_other_writable_compiled_file_is_ignored(
    policy_file: Path, cache_dir: Path
) -> None:
    compiled = _plant_lie(policy_file, cache_dir)
    compiled.chmod(0o666)
    assert load_policy(str(policy_file), str(cache_dir)).on_error == "allow"


def test_writable_cache_dir_is_ignored(
    policy_file: Path, cache_dir: Path, yaml_loads: list[str]
) -> None:
    _plant_lie(policy_file, cache_dir)
    cache_dir.chmod(0o777)
    try:
        assert load_policy(str(policy_file), str(cache_dir)).on_error == "allow"
        assert load_policy(str(policy_file), str(cache_dir)).on_error == "allow"
        assert len(yaml_loads) == 3  # and nothing is written into such a directory
    finally:
        cache_dir.chmod(0o755)


@AS_ROOT
def test_foreign_owned_compiled_file_is_ignored(policy_file: Path, cache_dir: Path) -> None:
    compiled = _plant_lie(policy_file, cache_dir)
    os.chown(compiled, 65534, 65534)
    assert load_policy(str(policy_file), str(cache_dir)).on_error == "allow"


def test_symlinked_compiled_file_is_ignored(
    policy_file: Path, cache_dir: Path, tmp_path: Path
) -> None:
    compiled = _plant_lie(policy_file, cache_dir)
    target = tmp_path / "elsewhere.json"
    os.replace(compiled, target)
    compiled.symlink_to(target)
    assert load_policy(str(policy_file), str(cache_dir)).on_error == "allow"


@AS_ROOT
@pytest.mark.parametrize("unsafe", ["group-writable", "foreign-owner"])
def test_policy_ownership_is_still_enforced(
    policy_file: Path, cache_dir: Path, unsafe: str
) -> None:
    load_policy(str(policy_file), str(cache_dir))
    if unsafe == "group-writable":
        policy_file.chmod(0o664)
    else:
        os.chown(policy_file, 65534, 65534)
    with pytest.raises(PolicyError) as direct:
        load_policy(str(policy_file))
    with pytest.raises(PolicyError) as cached:
        load_policy(str(policy_file), str(cache_dir))
    assert str(cached.value) == str(direct.value)
    assert "refused" in str(cached.value)


def test_missing_policy_raises_like_load_policy(tmp_path: Path, cache_dir: Path) -> None:
    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(PolicyError) as direct:
        load_policy(missing)
    with pytest.raises(PolicyError) as cached:
        load_policy(missing, str(cache_dir))
    assert str(cached.value) == str(direct.value)


def test_invalid_policy_raises_and_compiles_nothing(tmp_path: Path, cache_dir: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("version: 1\naction: sometimes\n")
    with pytest.raises(PolicyError, match="action"):
        load_policy(str(path), str(cache_dir))
    assert not compiled_file(path, cache_dir).exists()


def _fresh_interpreter(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-I", "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def test_warm_run_does_not_parse_yaml_in_a_fresh_interpreter(
    policy_file: Path, cache_dir: Path
) -> None:
    load_policy(str(policy_file), str(cache_dir))
    out = _fresh_interpreter(
        f"""
        import libvirt_txmode.engine.policy as policy
        def refuse(*args, **kwargs):
            raise AssertionError("the YAML was parsed")
        policy.parse_policy = refuse
        from libvirt_txmode.engine.policy import load_policy
        print(load_policy({str(policy_file)!r}, {str(cache_dir)!r}).action)
        """
    )
    assert out == "audit"


def test_warm_run_does_not_import_yaml(policy_file: Path, cache_dir: Path) -> None:
    load_policy(str(policy_file), str(cache_dir))
    out = _fresh_interpreter(
        f"""
        import sys
        from libvirt_txmode.engine.policy import load_policy
        load_policy({str(policy_file)!r}, {str(cache_dir)!r})
        print("yaml" in sys.modules)
        """
    )
    assert out == "False"


def test_cold_run_in_a_fresh_interpreter_compiles(policy_file: Path, cache_dir: Path) -> None:
    out = _fresh_interpreter(
        f"""
        from libvirt_txmode.engine.policy import load_policy
        print(load_policy({str(policy_file)!r}, {str(cache_dir)!r}).action)
        """
    )
    assert out == "audit"
    assert compiled_file(policy_file, cache_dir).exists()


def test_hook_compiles_the_policy_into_its_cache_dir(tmp_path: Path, cache_dir: Path) -> None:
    policy_file = tmp_path / "require.yaml"
    policy_file.write_text("version: 1\ndefaults:\n  require: true\n")
    # No txmode on the NIC: nothing to probe, so this exercises only the policy path of the hook.
    xml = (
        b"<domain type='qemu'><name>vm1</name><os><type arch='x86_64'>hvm</type></os>"
        b"<devices><interface type='user'><model type='virtio'/></interface></devices></domain>"
    )
    argv = ["--policy", str(policy_file), "--snapshot", "", "--cache-dir", str(cache_dir)]
    argv += ["--", "vm1", "prepare", "begin", "-"]
    for _ in range(2):
        err = io.StringIO()
        assert hook.main(argv, stdin=io.BytesIO(xml), stderr=err) == 1
        assert "txmode-required" in err.getvalue()
    assert compiled_file(policy_file, cache_dir).exists()
