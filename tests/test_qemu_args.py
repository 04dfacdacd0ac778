"""qemu_args: QEMU 7.2's own option syntaxes, one expectation per rule of QEMU's parsers.

Each expectation names the QEMU 7.2 source that decides it (util/qemu-option.c, softmmu/vl.c,
softmmu/qdev-monitor.c, qobject/json-parser.c). Where QEMU refuses to start, the classifier may
drop the argument (nothing starts, so nothing reaches a NIC); it must never drop what QEMU would
apply. tests/test_e2e_passthrough.py gives the same syntaxes to the real binary.
"""

from __future__ import annotations

import re
from typing import Optional

import pytest

from libvirt_txmode.engine.model import QemuArg
from libvirt_txmode.engine.qemu_args import (
    MAX_VALUE,
    opt_value,
    opts_id,
    parse_commandline,
    parse_json_object,
    parse_opts,
)


def parse(*args: str) -> tuple[QemuArg, ...]:
    """The arguments of one <qemu:commandline>, the n-th on line n."""
    return parse_commandline([(arg, line) for line, arg in enumerate(args, 1)])


def one(*args: str) -> QemuArg:
    found = parse(*args)
    assert len(found) == 1, found
    return found[0]


def kinds(*args: str) -> list[str]:
    return [arg.kind for arg in parse(*args)]


def global_arg(text: str, target: str, value: str, line: int = 2) -> QemuArg:
    return QemuArg(kind="global", line=line, text=text, target=target, prop="tx", value=value)


# --- get_opt_value (util/qemu-option.c:64): ',,' is a literal comma --------------------------------


@pytest.mark.parametrize(
    ("text", "start", "expected"),
    [
        ("timer", 0, ("timer", 5)),
        ("timer,id=x", 0, ("timer", 5)),
        ("a,,b,c", 0, ("a,b", 4)),
        ("a,,,b", 0, ("a,", 3)),  # ',,' then the ',' that ends the value
        ("timer,,", 0, ("timer,", 7)),
        (",,", 0, (",", 2)),
        ("", 0, ("", 0)),
        ("tx=timer,,x,id=y", 3, ("timer,x", 11)),
    ],
)
def test_opt_value_reads_to_the_next_lone_comma(
    text: str, start: int, expected: tuple[str, int]
) -> None:
    assert opt_value(text, start) == expected


# --- opts_do_parse / get_opt_name_value (util/qemu-option.c:743-830) ------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # The implied name takes the first part only when it has no '=' (strcspn "=,").
        (
            "virtio-net-pci,id=x,tx=timer",
            [("driver", "virtio-net-pci"), ("id", "x"), ("tx", "timer")],
        ),
        ("tx=timer,driver=virtio-net-pci", [("tx", "timer"), ("driver", "virtio-net-pci")]),
        ("id=x,virtio-net-pci", [("id", "x"), ("virtio-net-pci", "on")]),
        # The implied value is read with get_opt_value: ',,' stays in the driver's name.
        ("virtio-net-pci,,tx=timer,id=x", [("driver", "virtio-net-pci,tx=timer"), ("id", "x")]),
        (",tx=timer", [("driver", ""), ("tx", "timer")]),
        # Values: up to the next lone ',', '=' allowed inside, ',,' a comma.
        ("e1000,tx=a=b", [("driver", "e1000"), ("tx", "a=b")]),
        ("e1000,tx=timer,,", [("driver", "e1000"), ("tx", "timer,")]),
        ("e1000,romfile=a,,tx=timer", [("driver", "e1000"), ("romfile", "a,tx=timer")]),
        ("e1000,tx=timer,", [("driver", "e1000"), ("tx", "timer")]),
        ("e1000,=x", [("driver", "e1000"), ("", "x")]),
        # Later parts without '=' are flags: 'foo' is foo=on, 'nofoo' foo=off (one 'no' only).
        ("e1000,tx", [("driver", "e1000"), ("tx", "on")]),
        ("e1000,notx", [("driver", "e1000"), ("tx", "off")]),
        ("e1000,nono", [("driver", "e1000"), ("no", "off")]),
        ("e1000,no", [("driver", "e1000"), ("", "off")]),
        ("e1000,,,x", [("driver", "e1000,"), ("x", "on")]),
    ],
)
def test_parse_opts_with_an_implied_name(text: str, expected: list[tuple[str, str]]) -> None:
    assert parse_opts(text, implied="driver") == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "driver=a,property=tx,value=timer",
            [("driver", "a"), ("property", "tx"), ("value", "timer")],
        ),
        ("virtio-net-pci,id=x", [("virtio-net-pci", "on"), ("id", "x")]),
        (",id=x", [("", "on"), ("id", "x")]),
        ("nodriver", [("driver", "off")]),
        ("", []),
    ],
)
def test_parse_opts_without_an_implied_name(text: str, expected: list[tuple[str, str]]) -> None:
    assert parse_opts(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # opts_parse_id (util/qemu-option.c:833): the first 'id', read without the implied
        # name, so a driver written with ',,' does not hide the id that follows.
        ("virtio-net-pci,id=x,id=y", "x"),
        ("virtio-net-pci,noid", "off"),
        ("virtio-net-pci,id", "on"),
        ("virtio-net-pci,,id=y,id=x", "y"),
        ("id=x,virtio-net-pci", "x"),
        ("virtio-net-pci", None),
        ("virtio-net-pci,identity=x", None),
    ],
)
def test_opts_id_is_the_first_id(text: str, expected: Optional[str]) -> None:
    assert opts_id(text) == expected


# --- QEMU's JSON (qobject/json-parser.c:129-215, :295) ---------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"driver":"virtio-net-pci","tx":"timer"}', {"driver": "virtio-net-pci", "tx": "timer"}),
        ("{'driver':'virtio-net-pci','tx':'timer'}", {"driver": "virtio-net-pci", "tx": "timer"}),
        (
            """{'driver':"virtio-net-pci","tx":'timer'}""",
            {"driver": "virtio-net-pci", "tx": "timer"},
        ),
        # A single-quoted string may hold '"' unescaped, and \' is an escape in either quote.
        ("""{'tx':'say "hi"'}""", {"tx": 'say "hi"'}),
        (r"""{'tx':'it\'s'}""", {"tx": "it's"}),
        (r"""{"tx":"it\'s"}""", {"tx": "it's"}),
        (r"""{"tx":"a\"b"}""", {"tx": 'a"b'}),
        (r"""{"tx":"tim\u0065r"}""", {"tx": "timer"}),
        (r"""{"t\u0078":"timer"}""", {"tx": "timer"}),
        (r"""{"tx":"a\/b\\c\n"}""", {"tx": "a/b\\c\n"}),
        (' { "tx" :\t"timer"\r\n} ', {"tx": "timer"}),
        (
            '{"tx":"timer","x":[1,{"y":null}],"z":true}',
            {"tx": "timer", "x": [1, {"y": None}], "z": True},
        ),
    ],
)
def test_json_as_qemu_reads_it(text: str, expected: dict[str, object]) -> None:
    assert parse_json_object(text) == expected


@pytest.mark.parametrize(
    ("text", "error"),
    [
        # qdict_haskey before qdict_put_obj: a duplicate key is an error, even one spelled
        # differently, and in a nested object too.
        ('{"tx":"bh","tx":"timer"}', "duplicate key 'tx'"),
        (r"""{"tx":"bh",'t\u0078':"timer"}""", "duplicate key 'tx'"),
        ('{"a":{"b":1,"b":2}}', "duplicate key 'b'"),
        (r"""{"tx":"\x74imer"}""", "bad escape"),
        (r"""{"tx":"\a"}""", "bad escape"),
        (r"""{"tx":"\u00g1"}""", "bad \\u escape"),
        ('{"tx":"ti\tmer"}', "control character"),
        ('{"tx":"timer}', "unterminated string"),
        ("{'tx':'timer}", "unterminated string"),
        ('["virtio-net-pci"]', "not a JSON object"),
        ('{"tx":"timer"', "Expecting"),
        ('{"tx":"timer"} {"tx":"bh"}', "Extra data"),  # QEMU: "Expecting at most one JSON value"
    ],
)
def test_json_qemu_refuses(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=re.escape(error)):
        parse_json_object(text)


def test_json_nested_too_deeply_is_an_error_not_a_crash() -> None:
    with pytest.raises(ValueError, match="nested too deeply"):
        parse_json_object('{"a":' + "[" * 100_000 + "]" * 100_000 + "}")


# --- the option loop (softmmu/vl.c: lookup_opt, :1537) ---------------------------------------------


def test_a_long_option_is_the_same_option() -> None:
    # lookup_opt: "if (r[1] == '-') r++": one more '-' is allowed, not two.
    text = "--global virtio-net-pci.tx=timer"
    assert parse("--global", "virtio-net-pci.tx=timer") == (
        global_arg(text, "virtio-net-pci", "timer"),
    )
    assert one("--device", "virtio-net-pci,tx=timer").target == "virtio-net-pci"
    assert one("--set", "device.x.tx=timer").kind == "set"
    assert kinds("---global", "virtio-net-pci.tx=timer") == ["unverifiable", "unverifiable"]


def test_an_unknown_option_is_unverifiable_and_the_next_argument_is_still_read() -> None:
    # QEMU stops at it ("invalid option"); a newer QEMU may know it, and whether it takes a
    # value is unknown: the next argument is judged as an option.
    found = parse("-no-such-option", "-global", "virtio-net-pci.tx=timer")
    assert [a.kind for a in found] == ["unverifiable", "global"]
    assert found[0].reason == "-no-such-option is not an option this tool knows"
    assert kinds("-", "-S") == ["unverifiable"]
    assert kinds("--") == ["unverifiable"]


def test_a_bare_argument_is_unverifiable() -> None:
    # vl.c: an argument not starting with '-' is a disk image (drive_add(IF_DEFAULT, 0, ...)).
    assert one("virtio-net-pci.tx=timer").reason == "QEMU reads a bare argument as a disk image"


def test_a_value_is_taken_even_when_it_looks_like_an_option() -> None:
    # lookup_opt: HAS_ARG takes argv[optind++], whatever it is. So -name eats "-global" and
    # what was meant as its value is a bare argument: still judged.
    found = parse("-name", "-global", "virtio-net-pci.tx=timer")
    assert [a.kind for a in found] == ["unverifiable"]
    assert found[0].text == "virtio-net-pci.tx=timer"
    assert parse("-fw_cfg", "-device") == ()


@pytest.mark.parametrize("option", ["-global", "-device", "-set", "-readconfig", "--global"])
def test_an_option_without_its_value_is_unverifiable(option: str) -> None:
    # lookup_opt: "requires an argument". In a domain, libvirt's own arguments follow ours
    # (-sandbox, -msg): what such an option would take is not in the XML.
    found = one("-fw_cfg", "name=opt/x,string=y", option)
    assert found.kind == "unverifiable"
    assert found.reason == f"{option} has no value"
    assert found.line == 3


@pytest.mark.parametrize(
    "args",
    [
        ("-fw_cfg", "name=opt/x,string=y"),
        ("-smbios", "type=1,serial=x"),
        ("-name", "guest=x"),
        ("-S",),
        ("-no-user-config", "-nodefaults"),
        ("-netdev", "user,id=n1"),
        ("-object", "memory-backend-ram,id=m,size=1M"),
        ("-chardev", "null,id=c"),
        ("-msg", "timestamp=on"),
    ],
)
def test_options_that_cannot_touch_a_device_are_dropped(args: tuple[str, ...]) -> None:
    assert parse(*args) == ()


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (
            ("-readconfig", "/etc/x.cfg"),
            "-readconfig reads options from a file this tool cannot see",
        ),
        (
            ("-nic", "user,model=virtio"),
            "-nic makes QEMU build a NIC itself, with its own defaults",
        ),
        (
            ("-net", "nic,model=virtio"),
            "-net can make QEMU build a NIC itself, with its own defaults",
        ),
        (("-machine", "pc"), "-machine is not known to be harmless to a NIC's tx"),
        (("-usbdevice", "tablet"), "-usbdevice is not known to be harmless to a NIC's tx"),
        (("-preconfig",), "-preconfig is not known to be harmless to a NIC's tx"),
    ],
)
def test_options_that_may_reach_a_nic_are_unverifiable(args: tuple[str, ...], reason: str) -> None:
    found = one(*args)
    assert (found.kind, found.reason) == ("unverifiable", reason)
    assert found.text == " ".join(args)
    assert found.line == len(args)  # the value's line: where a tx or a driver is written


def test_an_arguments_line_is_its_values_line() -> None:
    # The XML may split an option and its value across elements or lines: the value is quoted.
    found = parse_commandline([("-global", 7), ("virtio-net-pci.tx=timer", 9)])
    assert found == (global_arg("-global virtio-net-pci.tx=timer", "virtio-net-pci", "timer", 9),)


def test_a_huge_value_is_unverifiable_without_being_parsed() -> None:
    value = "virtio-net-pci," + "x" * MAX_VALUE
    found = one("-device", value)
    assert found.kind == "unverifiable"
    assert found.text == f"-device {value}"[:80] + "..."
    assert parse("-fw_cfg", "name=opt/x,string=" + "y" * MAX_VALUE) == ()


# --- -global (softmmu/qdev-monitor.c:1027 qemu_global_option) -----------------------------------


def test_global_short_form() -> None:
    text = "-global virtio-net-pci.tx=timer"
    assert one("-global", "virtio-net-pci.tx=timer") == global_arg(text, "virtio-net-pci", "timer")


def test_global_short_form_takes_the_rest_verbatim() -> None:
    # qemu_opt_set(opts, "value", str + offset + 1): no ',,' unescaping, no splitting at ','.
    assert one("-global", "virtio-net-pci.tx=timer,,x").value == "timer,,x"
    assert one("-global", "virtio-net-pci.tx=timer,value=bh").value == "timer,value=bh"
    assert one("-global", "virtio-net-pci.tx=").value == ""


def test_global_short_form_splits_at_the_first_dot() -> None:
    # "%63[^.=].%63[^=]": the type ends at the first '.', the property may hold dots.
    assert parse("-global", "virtio-net-pci.x.tx=timer") == ()  # property "x.tx"
    found = one("-global", "a,b.tx=timer")
    assert (found.target, found.value) == ("a,b", "timer")
    found = one("-global", " virtio-net-pci.tx=timer")
    assert found.target == " virtio-net-pci"  # %[ skips no blanks: no such type


def test_global_short_form_63_character_limits() -> None:
    # driver[64], property[64]: "%63[^.=]" reads 63 characters and then needs the '.'.
    longest = "v" * 63
    assert one("-global", f"{longest}.tx=timer").target == longest
    # 64: no short form; as QemuOpts its name "vvv….tx" is an "Invalid parameter": QEMU exits.
    assert parse("-global", f"{'v' * 64}.tx=timer") == ()
    # A property of 64 characters cannot be tx; nor can one of 63 unless it is "tx".
    assert parse("-global", f"virtio-net-pci.{'t' * 64}=timer") == ()
    assert parse("-global", f"virtio-net-pci.{'t' * 63}=timer") == ()


@pytest.mark.parametrize(
    ("value", "target", "setting"),
    [
        ("driver=virtio-net-pci,property=tx,value=timer", "virtio-net-pci", "timer"),
        ("property=tx,value=timer,driver=virtio-net-device", "virtio-net-device", "timer"),
        # global_init_func: qemu_opt_get, the last of a name (qemu_opt_find walks backwards).
        ("driver=e1000,property=tx,value=timer,driver=virtio-net-pci", "virtio-net-pci", "timer"),
        ("driver=virtio-net-pci,property=tx,value=bh,value=timer", "virtio-net-pci", "timer"),
        # ',,' is a comma here: the long form is QemuOpts.
        ("driver=virtio-net-pci,property=tx,value=timer,,x", "virtio-net-pci", "timer,x"),
        # opts_do_parse skips 'id'.
        ("id=g,driver=virtio-net-pci,property=tx,value=timer", "virtio-net-pci", "timer"),
    ],
)
def test_global_long_form(value: str, target: str, setting: str) -> None:
    assert one("-global", value) == global_arg(f"-global {value}", target, setting)


@pytest.mark.parametrize(
    "value",
    [
        "driver=virtio-net-pci,property=mq,value=off",  # another property cannot touch tx
        "driver=virtio-net-pci,property=tx",  # "options 'driver', 'property', and 'value' are required"
        "driver=virtio-net-pci,property=tx,value=timer,nothing",  # 'thing': "Invalid parameter"
        "driver=virtio-net-pci,prop=tx,value=timer",
        "virtio-net-pci.mq=off",
        "ICH9-LPC.disable_s3=1",
    ],
)
def test_global_that_sets_no_tx_is_dropped(value: str) -> None:
    assert parse("-global", value) == ()


def test_global_of_tx_on_any_type_is_kept_for_the_engine() -> None:
    # Which types a -global reaches is the engine's business (type ancestry), not the syntax's.
    assert one("-global", "e1000.tx=timer").target == "e1000"
    assert one("-global", "device.tx=timer").target == "device"


# --- -device (softmmu/vl.c:3236; softmmu/qdev-monitor.c:614, :730) ---------------------------------


def device(text: str, target: str, value: Optional[str], ident: Optional[str] = None) -> QemuArg:
    return QemuArg(kind="device", line=2, text=text, target=target, value=value, ident=ident)


@pytest.mark.parametrize(
    ("value", "target", "tx", "ident"),
    [
        ("virtio-net-pci,id=x,tx=timer", "virtio-net-pci", "timer", "x"),
        ("tx=timer,driver=virtio-net-pci", "virtio-net-pci", "timer", None),
        ("id=x,tx=timer,driver=virtio-net-pci", "virtio-net-pci", "timer", "x"),
        # qemu_opts_to_qdict: each option in order into one QDict, the last of a name wins.
        ("e1000,driver=virtio-net-pci,tx=timer", "virtio-net-pci", "timer", None),
        ("virtio-net-pci,tx=timer,tx=bh", "virtio-net-pci", "bh", None),
        ("virtio-net-pci,tx=timer,,", "virtio-net-pci", "timer,", None),
        ("virtio-net-pci,tx", "virtio-net-pci", "on", None),
        ("virtio-net-pci,notx", "virtio-net-pci", "off", None),
        ("virtio-net-pci", "virtio-net-pci", None, None),
        ("virtio-net-pci,noid", "virtio-net-pci", None, "off"),
        ("virtio-net-pci,id=x,id=y", "virtio-net-pci", None, "x"),
        ("virtio-net,tx=timer", "virtio-net", "timer", None),  # the alias: the engine resolves it
        ("e1000,id=x", "e1000", None, "x"),
        ("id=x", "", None, "x"),  # "Parameter 'driver' is missing"
        ("virtio-net-pci,,tx=timer", "virtio-net-pci,tx=timer", None, None),
    ],
)
def test_device_as_qemuopts(
    value: str, target: str, tx: Optional[str], ident: Optional[str]
) -> None:
    assert one("-device", value) == device(f"-device {value}", target, tx, ident)


@pytest.mark.parametrize(
    ("value", "target", "tx"),
    [
        ('{"driver":"virtio-net-pci","id":"x","tx":"timer"}', "virtio-net-pci", "timer"),
        ("{'driver':'virtio-net-pci','id':'x','tx':'timer'}", "virtio-net-pci", "timer"),
        ("{'tx':'timer','driver':'virtio-net-pci'}", "virtio-net-pci", "timer"),
        (r"""{"driver":"virtio\u002dnet-pci",'t\u0078':'timer'}""", "virtio-net-pci", "timer"),
        ('{"driver":"virtio-net-pci"}', "virtio-net-pci", None),
        ('{"driver":"e1000","tx":"timer"}', "e1000", "timer"),
        ('{"driver":1,"tx":"timer"}', "", "timer"),  # "Invalid parameter type": QEMU exits
    ],
)
def test_device_as_json(value: str, target: str, tx: Optional[str]) -> None:
    # optarg[0] == '{': qobject_from_json, no QemuOpts: no id a -set could find.
    found = one("-device", value)
    assert found == QemuArg(
        kind="device", line=2, text=f"-device {value}", target=target, value=tx, json=True
    )


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ('{"driver":"virtio-net-pci","tx":"bh","tx":"timer"}', "duplicate key 'tx'"),
        ('{"driver":"virtio-net-pci","tx":1}', "its tx is not a string"),
        ('{"driver":"virtio-net-pci","tx":null}', "its tx is not a string"),
        ("{driver:virtio-net-pci}", "cannot be read as QEMU reads it"),
    ],
)
def test_device_json_qemu_refuses_or_cannot_be_read_is_unverifiable(
    value: str, reason: str
) -> None:
    found = one("-device", value)
    assert found.kind == "unverifiable"
    assert reason in found.reason


def test_device_json_only_when_the_value_starts_with_a_brace() -> None:
    # vl.c: optarg[0] == '{'. With a blank first it is QemuOpts: the driver is ' {"driver"…'.
    found = one("-device", ' {"driver":"virtio-net-pci","tx":"timer"}')
    assert (found.kind, found.json) == ("device", False)
    assert found.target == ' {"driver":"virtio-net-pci"'


# --- -set (softmmu/vl.c:2151 qemu_set_option, :2072 is_qemuopts_group) ---------------------------


def set_arg(value: str, target: str, prop: str, setting: str) -> QemuArg:
    return QemuArg(
        kind="set", line=2, text=f"-set {value}", target=target, prop=prop, value=setting
    )


@pytest.mark.parametrize(
    ("value", "target", "prop", "setting"),
    [
        ("device.x.tx=timer", "x", "tx", "timer"),
        ("device.net0.tx=bh", "net0", "tx", "bh"),
        ("device.x.driver=virtio-net-pci", "x", "driver", "virtio-net-pci"),
        # qemu_opt_set(opts, arg, str + offset + 1): the rest verbatim.
        ("device.x.tx=timer,,x", "x", "tx", "timer,,x"),
        ("device.x.tx=a=b", "x", "tx", "a=b"),
        ("device.x.tx=", "x", "tx", ""),
        (f"device.{'i' * 63}.tx=timer", "i" * 63, "tx", "timer"),
    ],
)
def test_set_of_a_device(value: str, target: str, prop: str, setting: str) -> None:
    assert one("-set", value) == set_arg(value, target, prop, setting)


@pytest.mark.parametrize(
    "value",
    [
        "device.x.mq=on",  # another property of the device
        "device.x.tx.y=timer",  # "%63[^=]": property "tx.y", which no device has
        "netdev.n.tx=timer",  # another group's options
        "drive.d.if=virtio",
        "object.o.tx=timer",  # "-set is not supported with object"
        "machine.m.tx=timer",
        "device.x",  # "can't parse"
        "device.x.tx",
        "device.x=timer",
        f"device.{'i' * 64}.tx=timer",  # "%63[^.]" then '.': can't parse
        f"{'d' * 64}.x.tx=timer",
    ],
)
def test_set_that_reaches_no_tx_is_dropped(value: str) -> None:
    assert parse("-set", value) == ()


def test_set_of_a_global_is_unverifiable() -> None:
    # A -global written with id= is a QemuOpts of group "global": -set rewrites its value.
    found = one("-set", "global.g.value=timer")
    assert found.kind == "unverifiable"
    assert found.reason == "-set of a -global: which tx it makes is not computed"


# --- whole command lines -------------------------------------------------------------------------


def test_a_command_line_keeps_only_what_may_reach_a_tx_in_order() -> None:
    found = parse(
        "-fw_cfg", "name=opt/x,string=y",
        "-device", "virtio-net-pci,id=x",
        "-global", "ICH9-LPC.disable_s3=1",
        "-set", "device.x.tx=timer",
        "-object", "memory-backend-ram,id=m,size=1M",
        "-global", "virtio-net-device.tx=timer",
        "-readconfig", "/etc/x.cfg",
    )  # fmt: skip
    assert [(a.kind, a.line) for a in found] == [
        ("device", 4),
        ("set", 8),
        ("global", 12),
        ("unverifiable", 14),
    ]
