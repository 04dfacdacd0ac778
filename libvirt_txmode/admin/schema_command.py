"""``libvirt-txmode policy-schema``: print the policy's JSON Schema (for editors)."""

from __future__ import annotations

import argparse
import json
from typing import IO, Any

from ..common.exits import EXIT_OK
from ..engine.policy_schema import json_schema


def add_parser(sub: Any) -> None:
    cmd = sub.add_parser(
        "policy-schema", help="print the policy's JSON Schema (for editors: yaml-language-server)"
    )
    cmd.set_defaults(run=run)


def run(args: argparse.Namespace, out: IO[str]) -> int:
    out.write(json.dumps(json_schema(), indent=2) + "\n")
    return EXIT_OK
