"""The one description of policy.yaml: every key, its type, its bounds, its default, its meaning.

Three readers are driven by it, so they cannot drift apart:
- ``policy.parse_policy`` walks the composed YAML against it (errors name file, line and key);
- ``policy.policy_from_json`` walks the compiled JSON copy (kept in the cache directory, read
  when the YAML is unchanged) against it;
- ``json_schema()`` publishes it as a JSON Schema (``libvirt-txmode policy-schema``) for editors.

It is written in the schema language of ``schema.py`` (kinds of values, the walker). Standard
library only: reading the compiled copy needs no YAML.
"""

from __future__ import annotations

from typing import Any

from .model import TXMODES  # libvirt's only txmode values (model is standard library only)
from .schema import (
    Boolean,
    Choice,
    Date,
    Field,
    ListOf,
    Mapping,
    Number,
    Text,
    Version,
    is_iso_date,  # noqa: F401 - admin's policy-test checks --today with it
    kind_schema,
)

ACTIONS = ("enforce", "audit")
DECISIONS = ("deny", "allow")
PASSTHROUGH_LEVELS = ("deny", "warn", "allow")
INEFFECTIVE_LEVELS = ("error", "warn", "ignore")
MATCH_KEYS = ("domain", "network", "bridge", "type", "model", "mac")
EXCEPTION_MATCH_KEYS = ("domain", "mac", "rule", "code")
# What `validate-domain --generate-exceptions` writes for a reason: check-policy flags it.
TODO_REASON = "TODO"
DEFAULT_EMULATORS = ("/usr/bin/qemu-system-*", "/usr/libexec/qemu-kvm")
SCHEMA_ID = "https://libvirt-txmode.invalid/policy-v1.schema.json"


# --- the policy, version 1 -----------------------------------------------------------------------

# What a rule may set for the NICs it matches, and ``defaults`` for the others (but the
# rules-only ones). ``policy.Settings`` holds one value per entry: a key declared here is read,
# merged, compiled and checked everywhere. A setting with no default of its own takes the
# top-level key of the same name (``action``); one with neither is None ("no limit").
SETTINGS = (
    Field(
        "allowed",
        ListOf(Choice(TXMODES)),
        "txmodes permitted (txmode-not-allowed for any other)",
        default=list(TXMODES),
    ),
    Field(
        "require",
        Boolean(),
        "must every virtio NIC set a txmode? (txmode-required)",
        default=False,
    ),
    Field(
        "ineffective",
        Choice(INEFFECTIVE_LEVELS),
        "level of txmode-ineffective: a txmode QEMU will not use (vhost-net, vhost-user, "
        "non-virtio model); ignore: no finding",
        default="warn",
    ),
    Field(
        "action",
        Choice(ACTIONS),
        "per-rule override of the top-level action",
        default_text="the top-level action",
    ),
)
SETTING_NAMES = tuple(f.name for f in SETTINGS)
DEFAULT_SETTINGS = tuple(f for f in SETTINGS if not f.rules_only)

MATCH = Mapping(
    tuple(
        Field(key, Text(), f"glob pattern on the NIC's {what}")
        for key, what in (
            ("domain", "domain name"),
            ("network", "source network"),
            ("bridge", "source bridge"),
            ("type", "interface type"),
            ("model", "model type"),
            ("mac", "MAC address (case-insensitive)"),
        )
    ),
    "all optional, ANDed",
)

RULE = Mapping(
    (
        Field(
            "name",
            Text(),
            "named in every finding the rule produces",
            required="every rule needs a name (it is quoted in findings)",
        ),
        Field("match", MATCH, "which NICs the rule applies to: all keys optional, ANDed"),
        *SETTINGS,
    ),
    "the first rule whose match fits a NIC applies; its keys override defaults",
)

EXCEPTION_MATCH = Mapping(
    tuple(
        Field(key, Text(), f"glob pattern on the finding's {what}")
        for key, what in (
            ("domain", "domain name"),
            ("mac", "NIC's MAC address (case-insensitive)"),
            ("rule", "rule name (defaults for a NIC no rule matches)"),
            ("code", "code (e.g. txmode-not-allowed)"),
        )
    ),
    "at least one key, ANDed",
    at_least_one=True,
)

EXCEPTION = Mapping(
    (
        Field(
            "match",
            EXCEPTION_MATCH,
            "which findings the exception silences: at least one key, ANDed",
            required="every exception needs a match (domain, mac, rule and/or code)",
        ),
        Field(
            "reason",
            Text(),
            "why the exception is granted: reported with every finding it silences; check-policy "
            "flags TODO",
            required="every exception needs a reason (it is reported with what it silences)",
        ),
        Field(
            "expires",
            Date(),
            "the last day the exception applies; from the next day on it silences nothing and "
            "exception-expired says so",
        ),
    ),
    "silences the findings it matches; the first unexpired exception that matches applies",
)

POLICY = Mapping(
    (
        Field(
            "version",
            Version(1),
            "schema version",
            required="missing (this tool reads policy version 1)",
        ),
        Field(
            "action",
            Choice(ACTIONS),
            "enforce: violations are errors (the hook refuses the start, validate-domain exits "
            "1); audit: they are warnings (logged, the domain starts)",
            default="enforce",
        ),
        Field(
            "on_unknown",
            Choice(DECISIONS),
            "support could not be determined (emulator untrusted or missing, probe failed or "
            "timed out): deny makes it an error, allow a warning",
            default="deny",
        ),
        Field(
            "on_error",
            Choice(DECISIONS),
            "the hook itself failed (unreadable domain XML, internal error); a policy that cannot "
            "be read always denies: there is no on_error to consult",
            default="deny",
        ),
        Field(
            "passthrough",
            Choice(PASSTHROUGH_LEVELS),
            "level of passthrough-unverifiable: a <qemu:commandline> argument or <qemu:override> "
            "the tool cannot prove harmless to a NIC's tx. deny: a violation (an error under "
            "enforce, the hook refuses the start; a warning under audit); warn: a warning; allow: "
            "no finding. A tx the tool can compute is checked like any txmode whatever this says",
            default="deny",
        ),
        Field(
            "emulators",
            ListOf(Text(absolute=True)),
            "the only binaries ever executed to probe them; they must also be owned by root (or "
            "the caller) and not writable by group or others",
            default=list(DEFAULT_EMULATORS),
        ),
        Field(
            "probe_timeout",
            Number(0.1, 120),
            "seconds: a probe running longer is killed and support counts as unknown",
            default=5,
        ),
        Field("defaults", Mapping(DEFAULT_SETTINGS), "what applies to a NIC no rule matches"),
        Field(
            "rules",
            ListOf(RULE),
            "the first rule whose match fits a NIC applies; its keys override defaults",
            default=[],
        ),
        Field(
            "exceptions",
            ListOf(EXCEPTION),
            "findings silenced on purpose: the first unexpired exception that fits a finding "
            "silences it",
            default=[],
        ),
    ),
    "libvirt-txmode site policy (version 1)",
)
TOP_KEYS = POLICY.names


class OpenChoices(tuple[str, ...]):
    """Values that shell completion offers (shtab reads argparse ``choices``) without argparse
    refusing others: the command gives its own, clearer message for an unknown value."""

    def __contains__(self, item: object) -> bool:
        return True


# --- JSON Schema ---------------------------------------------------------------------------------


def json_schema() -> dict[str, Any]:
    """The policy as a JSON Schema (draft 07, what yaml-language-server reads best).

    What it cannot say: rule names must be unique (the readers check that too).
    """
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$id": SCHEMA_ID,
        "title": "libvirt-txmode policy",
        **kind_schema(POLICY),
    }
