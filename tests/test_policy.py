"""policy: loading policy.yaml, every error path, rule matching and file ownership checks."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from libvirt_txmode.engine import policy_schema
from libvirt_txmode.engine.domain_xml import Domain, Nic
from libvirt_txmode.engine.policy import MAX_POLICY_BYTES, PolicyError, load_policy, parse_policy
from libvirt_txmode.engine.policy_records import Match, Policy, Rule, Settings
from libvirt_txmode.engine.policy_schema import DEFAULT_EMULATORS

REPO_POLICY = Path(__file__).resolve().parent.parent / "policy.yaml"
FIXTURE_POLICY = Path(__file__).resolve().parent / "data" / "policies" / "site.yaml"


def _parse(text: str) -> Policy:
    return parse_policy(text, "p.yaml")


def _error(text: str) -> str:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "p.yaml")
    return str(info.value)


def _domain(name: str = "vm") -> Domain:
    return Domain(name=name, file="vm.xml", line=1, arch="x86_64")


def _nic(**kwargs: object) -> Nic:
    values: dict[str, object] = {"index": 0, "line": 1, "type": "network", "model": "virtio"}
    values.update(kwargs)
    return Nic(**values)  # type: ignore[arg-type]


# --- valid policies -------------------------------------------------------------------------------


def test_bundled_policy_loads() -> None:
    policy = load_policy(str(REPO_POLICY), require_root_owned=False)
    assert policy.source == str(REPO_POLICY)
    assert (policy.version, policy.action, policy.on_unknown, policy.on_error) == (
        1,
        "enforce",
        "deny",
        "deny",
    )
    assert policy.emulators == DEFAULT_EMULATORS
    assert policy.probe_timeout == 5.0
    assert policy.defaults == Settings.of(
        allowed=("iothread", "timer"), require=False, ineffective="warn", action="enforce"
    )
    storage = policy.settings_for(_domain(), _nic(network="storage-a"))
    assert (storage.rule, storage.allowed) == ("storage-no-timer", ("iothread",))
    assert policy.settings_for(_domain(), _nic(network="default")).rule is None


def test_packaged_policy_matches_repo_policy() -> None:
    packaged = REPO_POLICY.parent / "libvirt_txmode" / "data" / "policy.yaml"
    policy = load_policy(str(packaged), require_root_owned=False)
    assert policy.version == 1


def test_minimal_policy_is_the_builtin_one() -> None:
    assert _parse("version: 1\n") == Policy(source="p.yaml")


def test_every_key() -> None:
    policy = _parse(
        """\
version: 1
action: audit
on_unknown: allow
on_error: allow
emulators: [/opt/qemu/bin/*, /usr/bin/qemu-system-x86_64]
probe_timeout: 0.5
defaults:
  allowed: [timer]
  require: yes
  ineffective: error
rules:
  - name: r1
    match: {domain: "db-*", network: "n*", bridge: "br?", type: network, model: "virtio*",
            mac: "52:54:00:*"}
    allowed: []
    require: false
    ineffective: ignore
    action: enforce
  - name: r2
"""
    )
    assert policy == Policy(
        source="p.yaml",
        version=1,
        action="audit",
        on_unknown="allow",
        on_error="allow",
        emulators=("/opt/qemu/bin/*", "/usr/bin/qemu-system-x86_64"),
        probe_timeout=0.5,
        defaults=Settings.of(allowed=("timer",), require=True, ineffective="error", action="audit"),
        rules=(
            Rule(
                name="r1",
                line=12,
                match=Match(
                    domain="db-*",
                    network="n*",
                    bridge="br?",
                    type="network",
                    model="virtio*",
                    mac="52:54:00:*",
                ),
                overrides=(
                    ("action", "enforce"),
                    ("allowed", ()),
                    ("ineffective", "ignore"),
                    ("require", False),
                ),
            ),
            Rule(name="r2", line=19, match=Match(), overrides=()),
        ),
    )


@pytest.mark.parametrize("value", ["enforce", "audit"])
def test_action_values(value: str) -> None:
    policy = _parse(f"version: 1\naction: {value}\n")
    assert (policy.action, policy.defaults.action) == (value, value)


def test_defaults_action_overrides_top_level_action() -> None:
    policy = _parse("version: 1\naction: audit\ndefaults: {action: enforce}\n")
    assert (policy.action, policy.defaults.action) == ("audit", "enforce")


@pytest.mark.parametrize("key", ["on_unknown", "on_error"])
@pytest.mark.parametrize("value", ["deny", "allow"])
def test_decision_values(key: str, value: str) -> None:
    assert getattr(_parse(f"version: 1\n{key}: {value}\n"), key) == value


@pytest.mark.parametrize("value", ["error", "warn", "ignore"])
def test_ineffective_values(value: str) -> None:
    assert _parse(f"version: 1\ndefaults: {{ineffective: {value}}}\n").defaults.ineffective == value


@pytest.mark.parametrize(
    ("text", "expected"),
    [("[]", ()), ("[iothread]", ("iothread",)), ("[timer, iothread]", ("timer", "iothread"))],
)
def test_allowed_values(text: str, expected: tuple[str, ...]) -> None:
    assert _parse(f"version: 1\ndefaults: {{allowed: {text}}}\n").defaults.allowed == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("false", False), ("yes", True), ("no", False), ("On", True), ("OFF", False)],
)
def test_require_values(text: str, expected: bool) -> None:
    assert _parse(f"version: 1\ndefaults: {{require: {text}}}\n").defaults.require is expected


@pytest.mark.parametrize(("text", "expected"), [("0.1", 0.1), ("120", 120.0), ("1_0", 10.0)])
def test_probe_timeout_values(text: str, expected: float) -> None:
    assert _parse(f"version: 1\nprobe_timeout: {text}\n").probe_timeout == expected


def test_standard_explicit_tags_accepted() -> None:
    policy = _parse(
        "version: !!int 1\ndefaults: !!map {allowed: !!seq [timer], require: !!bool on}\n"
    )
    assert policy.defaults == Settings.of(allowed=("timer",), require=True)


def test_comments_and_explicit_document_markers() -> None:
    assert _parse("# c\n---\nversion: 1  # v\n...\n").version == 1


# --- errors ---------------------------------------------------------------------------------------

# The key lists the messages offer, as the schema declares them (a new setting adds itself).
TOP = ", ".join(policy_schema.POLICY.names)
SETTINGS = ", ".join(spec.name for spec in policy_schema.DEFAULT_SETTINGS)
RULE = ", ".join(policy_schema.RULE.names)
MATCHES = ", ".join(policy_schema.MATCH_KEYS)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("version: 1\nactoin: audit\n", f"p.yaml:2: actoin: unknown key (expected one of: {TOP})"),
        (
            "version: 1\ndefaults:\n  allowed: [timer]\n  requires: true\n",
            f"p.yaml:4: defaults.requires: unknown key (expected one of: {SETTINGS})",
        ),
        (
            "version: 1\nrules:\n  - name: a\n    mathc: {domain: x}\n",
            f"p.yaml:4: rules[0].mathc: unknown key (expected one of: {RULE})",
        ),
        (
            "version: 1\nrules:\n  - name: a\n  - name: b\n    match:\n      host: x\n",
            f"p.yaml:6: rules[1].match.host: unknown key (expected one of: {MATCHES})",
        ),
        ("version: 1\n1: x\n", "p.yaml:2: keys must be plain strings"),
        (
            "version: 1\ndefaults: {? [a]: b}\n",
            "p.yaml:2: defaults: keys must be plain strings",
        ),
        ("version: 1\naction: audit\naction: enforce\n", "p.yaml:3: action: duplicate key"),
    ],
)
def test_unknown_and_duplicate_keys(text: str, expected: str) -> None:
    assert _error(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "version: 1\ndefaults: {require: 'true'}\n",
            "p.yaml:2: defaults.require: expected true or false",
        ),
        (
            "version: 1\ndefaults: {require: 1}\n",
            "p.yaml:2: defaults.require: expected true or false",
        ),
        (
            "version: 1\ndefaults: {require: !!bool maybe}\n",
            "p.yaml:2: defaults.require: expected true or false",
        ),
        (
            "version: 1\nrules:\n  - name: a\n    require: 'yes'\n",
            "p.yaml:4: rules[0].require: expected true or false",
        ),
        ("version: 1\ndefaults: {allowed: 1}\n", "p.yaml:2: defaults.allowed: expected a list"),
        ("version: 1\ndefaults: {allowed: timer}\n", "p.yaml:2: defaults.allowed: expected a list"),
        (
            "version: 1\ndefaults:\n  allowed:\n    - iothread\n    - [timer]\n",
            "p.yaml:5: defaults.allowed[1]: expected one of: iothread, timer",
        ),
        ("version: 1\nemulators: 1\n", "p.yaml:2: emulators: expected a list"),
        ("version: 1\nemulators: ['']\n", "p.yaml:2: emulators[0]: must not be empty"),
        (
            "version: 1\nemulators:\n  - /usr/bin/*\n  - qemu-kvm\n",
            "p.yaml:4: emulators[1]: must be an absolute path or glob",
        ),
        ("version: 1\nprobe_timeout: true\n", "p.yaml:2: probe_timeout: expected a number"),
        ("version: 1\nprobe_timeout: '5'\n", "p.yaml:2: probe_timeout: expected a number"),
        ("version: 1\nprobe_timeout: 0\n", "p.yaml:2: probe_timeout: must be between 0.1 and 120"),
        (
            "version: 1\nprobe_timeout: 121\n",
            "p.yaml:2: probe_timeout: must be between 0.1 and 120",
        ),
        (
            "version: 1\nprobe_timeout: 0x10\n",
            "p.yaml:2: probe_timeout: expected a decimal number, not '0x10'",
        ),
        (
            "version: 1\nprobe_timeout: 1:30\n",
            "p.yaml:2: probe_timeout: expected a decimal number, not '1:30'",
        ),
        (
            "version: 1\nprobe_timeout: .inf\n",
            "p.yaml:2: probe_timeout: expected a decimal number, not '.inf'",
        ),
        (
            "version: 1\nprobe_timeout: !!float abc\n",
            "p.yaml:2: probe_timeout: expected a decimal number, not 'abc'",
        ),
        ("version: 1\ndefaults: []\n", "p.yaml:2: defaults: expected a mapping"),
        ("version: 1\ndefaults:\n", "p.yaml:2: defaults: expected a mapping"),
        ("version: 1\nrules: {name: a}\n", "p.yaml:2: rules: expected a list"),
        ("version: 1\nrules:\n  - just-a-name\n", "p.yaml:3: rules[0]: expected a mapping"),
        (
            "version: 1\nrules:\n  - name: a\n    match: domain\n",
            "p.yaml:4: rules[0].match: expected a mapping",
        ),
        (
            "version: 1\nrules:\n  - name: a\n    match: {domain: 12}\n",
            "p.yaml:4: rules[0].match.domain: expected a string",
        ),
        (
            "version: 1\nrules:\n  - name: a\n    match: {mac: ''}\n",
            "p.yaml:4: rules[0].match.mac: must not be empty",
        ),
        ("version: 1\nrules:\n  - name: 7\n", "p.yaml:3: rules[0].name: expected a string"),
        (
            "version: 1\nrules:\n  - name: a\n  - match: {}\n",
            "p.yaml:4: rules[1].name: every rule needs a name (it is quoted in findings)",
        ),
        (
            "version: 1\nrules:\n  - name: a\n  - name: b\n  - name: a\n",
            "p.yaml:5: rules[2].name: duplicate rule name 'a'",
        ),
    ],
)
def test_wrong_types(text: str, expected: str) -> None:
    assert _error(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "version: 1\naction: enforcing\n",
            "p.yaml:2: action: 'enforcing' is not one of: enforce, audit",
        ),
        ("version: 1\naction: true\n", "p.yaml:2: action: expected one of: enforce, audit"),
        (
            "version: 1\non_unknown: warn\n",
            "p.yaml:2: on_unknown: 'warn' is not one of: deny, allow",
        ),
        ("version: 1\non_error: no\n", "p.yaml:2: on_error: expected one of: deny, allow"),
        (
            "version: 1\ndefaults: {ineffective: warning}\n",
            "p.yaml:2: defaults.ineffective: 'warning' is not one of: error, warn, ignore",
        ),
        (
            "version: 1\ndefaults: {action: Audit}\n",
            "p.yaml:2: defaults.action: 'Audit' is not one of: enforce, audit",
        ),
        (
            "version: 1\ndefaults:\n  allowed: [iothread, bh]\n",
            "p.yaml:3: defaults.allowed[1]: 'bh' is not one of: iothread, timer",
        ),
        (
            "version: 1\nrules:\n  - name: a\n    allowed:\n      - timer\n      - vhost\n",
            "p.yaml:6: rules[0].allowed[1]: 'vhost' is not one of: iothread, timer",
        ),
        (
            "version: 1\nrules:\n  - name: a\n    action: enforcing\n",
            "p.yaml:4: rules[0].action: 'enforcing' is not one of: enforce, audit",
        ),
    ],
)
def test_bad_enum_values(text: str, expected: str) -> None:
    assert _error(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("action: audit\n", "p.yaml:1: version: missing (this tool reads policy version 1)"),
        ("# c\nversion: 2\n", "p.yaml:2: version: unsupported version 2 (expected 1)"),
        ("version: 0\n", "p.yaml:1: version: unsupported version 0 (expected 1)"),
        ("version: '1'\n", "p.yaml:1: version: expected the integer 1"),
        ("version: 1.0\n", "p.yaml:1: version: expected the integer 1"),
        ("version:\n", "p.yaml:1: version: expected the integer 1"),
    ],
)
def test_version(text: str, expected: str) -> None:
    assert _error(text) == expected


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
def test_empty(text: str) -> None:
    assert _error(text) == "p.yaml:1: the policy is empty (expected at least 'version: 1')"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "version: 1\n  action: audit\n",
            "p.yaml:2: not valid YAML: mapping values are not allowed here",
        ),
        (
            "version: 1\nrules: [\n",
            "p.yaml:3: not valid YAML: expected the node content, but found '<stream end>'",
        ),
        (
            "version: 1\n\tx: 1\n",
            "p.yaml:2: not valid YAML: found character '\\t' that cannot start any token",
        ),
        ("version: 1\n---\nversion: 1\n", "p.yaml:2: not valid YAML: but found another document"),
        ("version: *nowhere\n", "p.yaml:1: not valid YAML: found undefined alias 'nowhere'"),
        ("[" * 5000 + "]" * 5000, "p.yaml:1: not valid YAML: nested too deeply"),
    ],
)
def test_not_yaml(text: str, expected: str) -> None:
    assert _error(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- version: 1\n", "p.yaml:1: expected a mapping"),
        ("just text\n", "p.yaml:1: expected a mapping"),
        ("42\n", "p.yaml:1: expected a mapping"),
    ],
)
def test_top_level_not_a_mapping(text: str, expected: str) -> None:
    assert _error(text) == expected


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ('!!python/object/apply:os.system ["touch {marker}"]\n', "p.yaml:1: expected a mapping"),
        (
            'version: !!python/object/apply:os.system ["touch {marker}"]\n',
            "p.yaml:1: version: expected the integer 1",
        ),
        (
            'version: 1\naction: !!python/object/apply:os.system ["touch {marker}"]\n',
            "p.yaml:2: action: expected one of: enforce, audit",
        ),
        (
            'version: 1\nemulators: !!python/object/new:os.system ["touch {marker}"]\n',
            "p.yaml:2: emulators: expected a list",
        ),
        (
            'version: 1\nx: !!python/object/apply:os.system ["touch {marker}"]\n',
            f"p.yaml:2: x: unknown key (expected one of: {TOP})",
        ),
        (
            "version: 1\ndefaults: !!python/object:os.system {{allowed: [timer]}}\n",
            "p.yaml:2: defaults: expected a mapping",
        ),
        (
            "version: 1\ndefaults: {{allowed: [!!python/name:os.system timer]}}\n",
            "p.yaml:2: defaults.allowed[0]: expected one of: iothread, timer",
        ),
    ],
)
def test_python_tags_never_run(tmp_path: Path, template: str, expected: str) -> None:
    marker = tmp_path / "pwned"
    assert _error(template.format(marker=marker)) == expected
    assert not marker.exists()


def test_error_attributes() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy("version: 1\ndefaults: {ineffective: x}\n", "/etc/p.yaml")
    error = info.value
    assert (error.file, error.line, error.key) == ("/etc/p.yaml", 2, "defaults.ineffective")
    assert error.message == "'x' is not one of: error, warn, ignore"


# --- settings_for and trusts ----------------------------------------------------------------------

RULES = """\
version: 1
defaults: {allowed: [iothread, timer], require: false, ineffective: warn}
rules:
  - name: storage
    match: {network: "storage*"}
    allowed: [iothread]
  - name: db-virtio
    match: {domain: "db-*", model: "virtio*"}
    require: true
  - name: storage-too
    match: {network: "storage-b"}
    allowed: [timer]
  - name: macs
    match: {mac: "52:54:00:AB:*"}
    ineffective: error
  - name: bridges
    match: {type: bridge, bridge: "br[0-9]"}
    action: audit
"""


@pytest.fixture
def rules_policy() -> Policy:
    return _parse(RULES)


def test_no_rule_gives_defaults(rules_policy: Policy) -> None:
    settings = rules_policy.settings_for(_domain(), _nic(network="default"))
    assert settings is rules_policy.defaults
    assert settings.rule is None


def test_first_match_wins(rules_policy: Policy) -> None:
    settings = rules_policy.settings_for(_domain(), _nic(network="storage-b"))
    assert settings == Settings.of(
        allowed=("iothread",), require=False, ineffective="warn", action="enforce", rule="storage"
    )


def test_match_keys_are_anded(rules_policy: Policy) -> None:
    db = _domain("db-1")
    assert rules_policy.settings_for(db, _nic(model="virtio-transitional")).rule == "db-virtio"
    assert rules_policy.settings_for(db, _nic(model="e1000")).rule is None
    assert rules_policy.settings_for(_domain("web-1"), _nic(model="virtio")).rule is None
    assert rules_policy.settings_for(_domain(), _nic(type="bridge", bridge="br0")).rule == "bridges"
    assert rules_policy.settings_for(_domain(), _nic(type="bridge", bridge="br10")).rule is None
    assert rules_policy.settings_for(_domain(), _nic(type="network", bridge="br0")).rule is None


def test_rule_overrides_merge_with_defaults(rules_policy: Policy) -> None:
    settings = rules_policy.settings_for(_domain("db-1"), _nic())
    assert settings == Settings.of(
        allowed=("iothread", "timer"),
        require=True,
        ineffective="warn",
        action="enforce",
        rule="db-virtio",
    )
    audit = rules_policy.settings_for(_domain(), _nic(type="bridge", bridge="br1"))
    assert (audit.action, audit.rule) == ("audit", "bridges")


def test_missing_value_never_matches(rules_policy: Policy) -> None:
    assert rules_policy.settings_for(_domain("db-1"), _nic(model=None)).rule is None
    assert rules_policy.settings_for(_domain(), _nic(network=None)).rule is None


@pytest.mark.parametrize("mac", ["52:54:00:ab:cd:ef", "52:54:00:AB:CD:EF", "52:54:00:Ab:00:01"])
def test_mac_matches_case_insensitively(rules_policy: Policy, mac: str) -> None:
    settings = rules_policy.settings_for(_domain(), _nic(mac=mac))
    assert (settings.rule, settings.ineffective) == ("macs", "error")


def test_mac_lowercase_pattern() -> None:
    match = Match(mac="52:54:00:ab:*")
    assert match.fits(_domain(), _nic(mac="52:54:00:AB:01:02"))
    assert not match.fits(_domain(), _nic(mac="52:54:00:AC:01:02"))
    assert not match.fits(_domain(), _nic(mac=None))


def test_globs_are_case_sensitive_except_mac() -> None:
    assert not Match(domain="DB-*").fits(_domain("db-1"), _nic())
    assert Match(domain="db-[0-9]").fits(_domain("db-1"), _nic())
    assert not Match(domain="db-?").fits(_domain("db-10"), _nic())
    assert Match().fits(_domain(), _nic(model=None, type=""))


def test_rule_without_settings_names_itself() -> None:
    policy = _parse("version: 1\nrules:\n  - name: just-a-label\n")
    assert policy.settings_for(_domain(), _nic()) == Settings.of(rule="just-a-label")


def test_trusts() -> None:
    policy = Policy()
    assert policy.trusts("/usr/bin/qemu-system-x86_64")
    assert policy.trusts("/usr/libexec/qemu-kvm")
    assert not policy.trusts("/tmp/qemu-system-x86_64")
    assert not policy.trusts("/usr/libexec/qemu-kvm.evil")
    custom = _parse("version: 1\nemulators: [/opt/qemu-*/bin/qemu-system-s390x]\n")
    assert custom.trusts("/opt/qemu-8.2/bin/qemu-system-s390x")
    assert not custom.trusts("/usr/bin/qemu-system-x86_64")
    assert not _parse("version: 1\nemulators: []\n").trusts("/usr/bin/qemu-system-x86_64")


# --- load_policy ----------------------------------------------------------------------------------


def _write(tmp_path: Path, text: str, mode: int = 0o644) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_load_fixture_policy() -> None:
    policy = load_policy(str(FIXTURE_POLICY), require_root_owned=False)
    assert [rule.name for rule in policy.rules] == [
        "storage-iothread-only",
        "db-explicit",
        "lab-audit",
    ]


def test_load_errors_name_the_path(tmp_path: Path) -> None:
    path = _write(tmp_path, "version: 1\naction: enforcing\n")
    with pytest.raises(PolicyError) as info:
        load_policy(str(path), require_root_owned=False)
    assert str(info.value) == f"{path}:2: action: 'enforcing' is not one of: enforce, audit"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(PolicyError) as info:
        load_policy(str(path), require_root_owned=False)
    assert str(info.value) == f"{path}: cannot read policy: No such file or directory"


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as info:
        load_policy(str(tmp_path), require_root_owned=False)
    assert str(info.value) == f"{tmp_path}: not a regular file"


def test_fifo_does_not_block(tmp_path: Path) -> None:
    fifo = tmp_path / "policy.yaml"
    os.mkfifo(fifo)
    with pytest.raises(PolicyError) as info:
        load_policy(str(fifo), require_root_owned=False)
    assert str(info.value) == f"{fifo}: not a regular file"


def test_oversize_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "version: 1\n" + "#" * MAX_POLICY_BYTES + "\n")
    with pytest.raises(PolicyError) as info:
        load_policy(str(path), require_root_owned=False)
    assert str(info.value) == f"{path}: larger than {MAX_POLICY_BYTES} bytes"


def test_max_size_file_is_read(tmp_path: Path) -> None:
    head = "version: 1\n#"
    path = _write(tmp_path, head + "x" * (MAX_POLICY_BYTES - len(head)))
    assert path.stat().st_size == MAX_POLICY_BYTES
    assert load_policy(str(path), require_root_owned=False).version == 1


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_bytes(b"version: 1\n# caf\xe9\n")
    with pytest.raises(PolicyError) as info:
        load_policy(str(path), require_root_owned=False)
    assert str(info.value) == f"{path}:1: not UTF-8: invalid continuation byte at byte 16"


def test_empty_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "")
    with pytest.raises(PolicyError) as info:
        load_policy(str(path), require_root_owned=False)
    assert str(info.value) == f"{path}:1: the policy is empty (expected at least 'version: 1')"


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")


@needs_root
def test_foreign_owner_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "version: 1\n")
    os.chown(path, 65534, 0)
    with pytest.raises(PolicyError) as info:
        load_policy(str(path), require_root_owned=True)
    # A file-level problem has no line, and the message says how to cure it.
    assert str(info.value) == (
        f"{path}: refused: file {path} is owned by uid 65534, not root; fix: chown root {path}"
    )
    assert load_policy(str(path), require_root_owned=False).version == 1


@needs_root
def test_root_default_requires_root_owned(tmp_path: Path) -> None:
    path = _write(tmp_path, "version: 1\n")
    os.chown(path, 65534, 65534)
    with pytest.raises(PolicyError, match=r"refused: file .* is owned by uid 65534, not root; "):
        load_policy(str(path))


@pytest.mark.parametrize(("mode", "shown"), [(0o664, "0664"), (0o646, "0646"), (0o2660, "2660")])
def test_writable_by_others_refused(tmp_path: Path, mode: int, shown: str) -> None:
    path = _write(tmp_path, "version: 1\n", mode)
    if os.geteuid() == 0:
        os.chown(path, 0, 0)
    else:
        pytest.skip("needs a root-owned file")
    with pytest.raises(PolicyError) as info:
        load_policy(str(path), require_root_owned=True)
    assert str(info.value) == (
        f"{path}: refused: file {path} is writable by group or others (mode {shown}); "
        f"fix: chmod go-w {path}"
    )
    assert load_policy(str(path), require_root_owned=False).version == 1


@needs_root
@pytest.mark.parametrize("mode", [0o600, 0o644, 0o444, 0o755])
def test_root_owned_safe_modes_accepted(tmp_path: Path, mode: int) -> None:
    path = _write(tmp_path, "version: 1\n", mode)
    os.chown(path, 0, 0)
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert load_policy(str(path), require_root_owned=True).version == 1


@needs_root
def test_symlink_is_judged_with_its_owner_and_its_target(tmp_path: Path) -> None:
    target = _write(tmp_path, "version: 1\n")
    os.chown(target, 0, 0)
    link = tmp_path / "link.yaml"
    link.symlink_to(target)
    assert load_policy(str(link), require_root_owned=True).source == str(link)
    # Whoever owns a link can point it elsewhere: the one trust rule refuses it.
    os.lchown(link, 65534, 65534)
    with pytest.raises(
        PolicyError,
        match=r"refused: symlink (.*) is owned by uid 65534, not root; fix: chown -h root \1$",
    ):
        load_policy(str(link), require_root_owned=True)
