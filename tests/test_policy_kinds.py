"""The schema's integer kind and rules-only flag, and the records derived from its settings.

The shipped schema declares no integer or rules-only setting yet, so the walker is driven here
with a small schema of its own, through both readers (the YAML source and the compiled copy's
JSON source) and the published JSON Schema.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import jsonschema
import pytest
import yaml

from libvirt_txmode.admin.policy_docs import _rows
from libvirt_txmode.engine.policy import PolicyError, _YamlSource, parse_policy
from libvirt_txmode.engine.policy_compiled import policy_from_json, policy_to_json
from libvirt_txmode.engine.policy_records import Policy, Settings
from libvirt_txmode.engine.policy_schema import (
    DEFAULT_SETTINGS,
    POLICY,
    RULE,
    SETTING_NAMES,
    SETTINGS,
)
from libvirt_txmode.engine.schema import (
    Field,
    Integer,
    JsonSource,
    Mapping,
    kind_schema,
    validate,
)

LIMITS = Mapping((Field("limit", Integer(1, 64), "at most this many"),))


def _from_yaml(text: str) -> Any:
    return validate(_YamlSource("p.yaml"), yaml.compose(text, Loader=yaml.SafeLoader), LIMITS, "")


def _from_json(text: str) -> Any:
    return validate(JsonSource(ValueError), json.loads(text), LIMITS, "")


@pytest.mark.parametrize(("text", "value"), [("1", 1), ("64", 64), ("1_0", 10)])
def test_integer_accepted(text: str, value: int) -> None:
    found = _from_yaml(f"limit: {text}\n")
    assert found == {"limit": value}
    assert type(found["limit"]) is int
    assert _from_json(json.dumps(found)) == found
    jsonschema.validate(found, kind_schema(LIMITS))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0", "p.yaml:1: limit: must be between 1 and 64"),
        ("65", "p.yaml:1: limit: must be between 1 and 64"),
        ("2.5", "p.yaml:1: limit: expected a whole number"),
        ("'2'", "p.yaml:1: limit: expected a whole number"),
        ("true", "p.yaml:1: limit: expected a whole number"),
        ("0x10", "p.yaml:1: limit: expected a decimal number, not '0x10'"),
    ],
)
def test_integer_refused_by_the_yaml_reader(text: str, message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        _from_yaml(f"limit: {text}\n")
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "limit: must be between 1 and 64"),
        (2.5, "limit: expected a whole number"),
        (True, "limit: expected a whole number"),
        ("2", "limit: expected a whole number"),
    ],
)
def test_integer_refused_by_the_compiled_reader_and_the_json_schema(
    value: object, message: str
) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        _from_json(json.dumps({"limit": value}))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"limit": value}, kind_schema(LIMITS))


def test_defaults_take_every_setting_but_the_rules_only_ones() -> None:
    defaults = POLICY.field("defaults").kind
    assert isinstance(defaults, Mapping)
    assert defaults.fields == tuple(f for f in SETTINGS if not f.rules_only) == DEFAULT_SETTINGS
    assert all(spec in RULE.fields for spec in SETTINGS)


def test_a_rules_only_setting_has_its_own_reference_row() -> None:
    limit = Field("max_things", Integer(1, 8), "at most this many", rules_only=True)
    rule = Mapping((RULE.field("name"), *DEFAULT_SETTINGS, limit))
    rows = _rows("rules[].", rule)
    shared = ", .".join(f.name for f in DEFAULT_SETTINGS)
    assert f"| `rules[].{shared}` | as in `defaults` | overrides |" in rows
    assert "| `rules[].max_things` | integer, 1 to 8, none | at most this many |" in rows
    assert all("max_things" not in row for row in _rows("defaults.", Mapping(DEFAULT_SETTINGS)))


# --- Settings and Policy, derived from the schema -------------------------------------------------


def test_settings_hold_one_value_per_schema_setting_with_its_default() -> None:
    settings = Settings()
    assert len(settings.values) == len(SETTING_NAMES)
    for spec in SETTINGS:
        value = getattr(settings, spec.name)
        if spec.default is not None:
            assert value == (tuple(spec.default) if isinstance(value, tuple) else spec.default)
    assert settings.action == POLICY.field("action").default  # no default of its own
    assert settings.rule is None
    with pytest.raises(AttributeError):
        settings.no_such_setting  # noqa: B018
    with pytest.raises(TypeError, match="not a policy setting: no_such_setting"):
        Settings.of(no_such_setting=1)


def test_policy_attributes_are_the_schema_top_level_keys() -> None:
    mine = {f.name for f in dataclasses.fields(Policy)} - {"source", "sha256", "_merged"}
    assert mine == set(POLICY.names)
    built = Policy()
    for spec in POLICY.fields:
        if spec.default is not None and spec.name not in ("rules", "exceptions"):
            value = getattr(built, spec.name)
            assert value == (tuple(spec.default) if isinstance(value, tuple) else spec.default)


def test_a_rule_merges_over_the_defaults_once_and_round_trips() -> None:
    policy = parse_policy(
        "version: 1\naction: audit\ndefaults: {require: true, ineffective: error}\n"
        "rules:\n  - name: r\n    allowed: [timer]\n    action: enforce\n",
        "p.yaml",
    )
    assert policy.defaults == Settings.of(
        require=True, ineffective="error", action="audit", allowed=("iothread", "timer")
    )
    merged = Settings.of(
        rule="r", require=True, ineffective="error", action="enforce", allowed=("timer",)
    )
    assert policy._merged == (merged,)
    again = policy_from_json(json.loads(json.dumps(policy_to_json(policy))))
    assert again == policy
    assert again._merged == (merged,)
