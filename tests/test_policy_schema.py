"""The published JSON Schema and the YAML reader come from one description: they agree.

``libvirt-txmode policy-schema`` is what editors (yaml-language-server) validate policy.yaml with;
every policy the reader accepts must pass it, and every shape the reader refuses must fail it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from libvirt_txmode.admin.policy_docs import reference_table, splice
from libvirt_txmode.engine.policy import PolicyError, parse_policy
from libvirt_txmode.engine.policy_schema import TOP_KEYS, json_schema

ROOT = Path(__file__).resolve().parent.parent
TXMODE = str(Path(sys.executable).parent / "libvirt-txmode")


def _schema() -> dict[str, Any]:
    proc = subprocess.run(
        [TXMODE, "policy-schema"], capture_output=True, text=True, timeout=60, check=True
    )
    schema: dict[str, Any] = json.loads(proc.stdout)
    return schema


def test_the_command_prints_a_valid_draft7_schema() -> None:
    schema = _schema()
    assert schema == json_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["required"] == ["version"]
    assert schema["properties"]["rules"]["items"]["required"] == ["name"]


@pytest.mark.parametrize(
    "path",
    [
        ROOT / "policy.yaml",
        ROOT / "libvirt_txmode" / "data" / "policy.yaml",
        *sorted((ROOT / "tests" / "data" / "policies").glob("*.yaml")),
    ],
    ids=lambda p: p.name,
)
def test_shipped_policies_pass_both(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    parse_policy(text, str(path))
    jsonschema.validate(yaml.safe_load(text), json_schema())


GOOD = [
    "version: 1\n",
    "version: 1\naction: audit\non_unknown: allow\non_error: deny\nprobe_timeout: 0.5\n",
    "version: 1\nemulators: [/usr/bin/qemu-*]\ndefaults: {allowed: [], require: true}\n",
    "version: 1\nrules:\n  - name: a\n    match: {domain: 'db-*', mac: '52:*'}\n"
    "    allowed: [iothread]\n    ineffective: error\n    action: audit\n",
    # Quoted: PyYAML (YAML 1.1) would hand jsonschema a date object; editors read YAML 1.2.
    "version: 1\nexceptions:\n  - match: {domain: 'db-*', code: txmode-required}\n"
    "    reason: migration (OPS-9)\n    expires: '2027-03-31'\n",
    "version: 1\nexceptions:\n  - match: {mac: '52:54:*'}\n    reason: lab\n",
]
BAD = [
    "version: 1\nexceptions:\n  - match: {}\n    reason: everything\n",
    "version: 1\nexceptions:\n  - match: {domain: x}\n",
    "version: 1\nexceptions:\n  - reason: r\n",
    "version: 1\nexceptions:\n  - match: {network: x}\n    reason: r\n",
    "version: 1\nexceptions:\n  - match: {domain: x}\n    reason: r\n    expires: '31.03.2027'\n",
    "version: 2\n",
    "version: '1'\n",
    "action: audit\n",
    "version: 1\nactoin: audit\n",
    "version: 1\naction: enforcing\n",
    "version: 1\non_unknown: true\n",
    "version: 1\nemulators: [qemu-kvm]\n",
    "version: 1\nemulators: ['']\n",
    "version: 1\nemulators: /usr/bin/qemu\n",
    "version: 1\nprobe_timeout: 0\n",
    "version: 1\nprobe_timeout: 121\n",
    "version: 1\nprobe_timeout: '5'\n",
    "version: 1\ndefaults: {allowed: [bh]}\n",
    "version: 1\ndefaults: {require: 'yes'}\n",
    "version: 1\ndefaults: {rule: x}\n",
    "version: 1\ndefaults: []\n",
    "version: 1\nrules: {name: a}\n",
    "version: 1\nrules:\n  - match: {domain: x}\n",
    "version: 1\nrules:\n  - name: ''\n",
    "version: 1\nrules:\n  - name: a\n    match: {uuid: x}\n",
    "version: 1\nrules:\n  - name: a\n    match: {domain: 1}\n",
    "version: 1\nrules:\n  - name: a\n    overrides: []\n",
]


@pytest.mark.parametrize("text", GOOD)
def test_accepted_by_both(text: str) -> None:
    parse_policy(text, "p.yaml")
    jsonschema.validate(yaml.safe_load(text), json_schema())


@pytest.mark.parametrize("text", BAD)
def test_refused_by_both(text: str) -> None:
    with pytest.raises(PolicyError):
        parse_policy(text, "p.yaml")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(yaml.safe_load(text), json_schema())


def test_the_policy_reference_is_the_schema() -> None:
    """docs/policy.md's key table is written from the schema: every key, and nothing else."""
    doc = (ROOT / "docs" / "policy.md").read_text(encoding="utf-8")
    assert splice(doc) == doc, "docs/policy.md's policy reference is stale: run scripts/gen-docs"
    table = reference_table()
    for key in ("version", "defaults.require", "rules[].match", "exceptions[].expires"):
        assert f"| `{key}` |" in table
    # Every top-level key has its row(s): a mapping's keys, a list's items follow it.
    for key in TOP_KEYS:
        assert f"| `{key}` |" in table or f"| `{key}." in table
