"""The experimental NVPCF SSDT (guest.nvpcf), checked the way NVIDIA's driver reads it.

ACPICA's acpiexec loads QEMU's own DSDT (tests/data/qemu-7.2-q35-dsdt.aml, read from a
booted guest) with the SSDT iasl built, and evaluates ``\\_SB.NPCF._DSM`` functions 0, 1 and
2 with the arguments the driver passes. The buffers are then parsed by a re-implementation
of the driver's own parser, from NVIDIA's open-gpu-kernel-modules 595.45.04:

- kernel-open/nvidia/nv-acpi.c, nv_acpi_dsm_method: the path ``\\_SB.NPCF._DSM``; Arg3 is a
  buffer (nv_acpi_evaluate_dsm_method); the result is copied out by nv_acpi_extract_object.
- src/nvidia/src/kernel/rmapi/client_resource.c, cliresCtrlCmdSystemNVPCFGetPowerModeInfo_IMPL
  (its GET_SUPPORTED, GET_STATIC and GET_DYNAMIC cases), _validateConfigStaticTable_2x,
  _controllerParseStaticTable_2x, _sysDeviceParseStaticTable_2x,
  _controllerParseStaticTable_v22, _controllerParseStaticTable_v20, configReadStructure;
  layouts and constants from src/nvidia/inc/kernel/platform/nvpcf.h and
  src/common/inc/controller/sbios_table_version.h.
- src/nvidia/src/kernel/platform/acpi_common.c, checkDsmCall and testIfDsmSubFunctionEnabled:
  a function is called only if its bit is set in function 0's answer.
"""

from __future__ import annotations

import re
import struct
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gpupass import model, paths
from gpupass.laptop.vm import pieces as vm_pieces
from gpupass.packaging import aml, render
from gpupass.packaging.artifacts import apparmor, domain, nvpcf

from .conftest import ROOT
from .test_romtable import acpiexec_buffer

DSDT = ROOT / "tests" / "data" / "qemu-7.2-q35-dsdt.aml"
GUID = uuid.UUID("36b49710-2483-11e7-9598-0800200c9a66")  # guids.c: NVPCF_ACPI_DSM_GUID
REVISION_2X = 0x200  # acpidsmguids.h: NVPCF_2X_ACPI_DSM_REVISION_ID
NVPCF_AML = str(paths.NVPCF_AML).lstrip("/")

SETTINGS = """
[guest]
nvpcf = true
nvpcf_ctgp_offset_w = -3
nvpcf_tpp_offset_w = 80
nvpcf_max_tgp_offset_w = 35
nvpcf_min_tgp_offset_w = -5
"""


def nvpcf_model(extra: str = "") -> model.Model:
    """aurora-z with NVPCF on (no shipped model turns it on)."""
    text = (ROOT / "models" / "aurora-z.toml").read_text(encoding="utf-8") + SETTINGS + extra
    return model.parse(text, "aurora-z", "models/aurora-z.toml")


# The driver's parser, re-implemented from its source -----------------------------------


class Rejected(Exception):
    """The driver refuses the data: its NV_STATUS, and why (its message where it prints one)."""

    def __init__(self, status: str, why: str) -> None:
        super().__init__(f"{status}: {why}")
        self.status, self.why = status, why


def config_read_structure(data: bytes, offset: int, fmt: str) -> list[int]:
    """client_resource.c configReadStructure/_configUnpackStructure: "<count><b|w|d>"...,
    little-endian bytes, words and dwords, each unpacked into an NvU32."""
    values, at = [], offset
    for count, kind in re.findall(r"(\d+)([bwd])", fmt):
        size = {"b": 1, "w": 2, "d": 4}[kind]
        for _ in range(int(count)):
            values.append(int.from_bytes(data[at : at + size], "little"))
            at += size
    return values


def get_supported(result: bytes) -> int:
    """GET_SUPPORTED case: exactly sizeof(NvU32) bytes, bit 0 (IS_SUPPORTED) set."""
    if len(result) != 4:
        raise Rejected("NV_ERR_NOT_SUPPORTED", " NVPCF FUNC_GET_SUPPORTED is not supported")
    funcs = int.from_bytes(result, "little")
    if not funcs & 1:
        raise Rejected("NV_ERR_NOT_SUPPORTED", " NVPCF FUNC_GET_SUPPORTED is not supported")
    # acpi_common.c _isDsmError: a 4-byte answer from NVHG_ERROR_UNSPECIFIED (0x80000001) to
    # NVHG_ERROR_PARM_INVALID (0x80000003) is an error, not a list.
    assert not 0x80000001 <= funcs <= 0x80000003
    return funcs


def function_enabled(funcs: int, function: int) -> bool:
    """acpi_common.c testIfDsmSubFunctionEnabled: byte function/8, bit function%8."""
    return bool(funcs.to_bytes(4, "little")[function // 8] & 1 << function % 8)


def validate_config_static_table_2x(data: bytes) -> None:
    """_validateConfigStaticTable_2x: 2 (CONFIG_2X_BUFF_SIZE_MIN) to 255
    (NVPCF0100_CTRL_CONFIG_2X_BUFF_SIZE_MAX) bytes; the last byte is the two's complement of
    the sum of the others. The GET_STATIC case prints its message on either failure."""
    if not 2 <= len(data) <= 255:
        raise Rejected("NV_ERR_NOT_SUPPORTED", "Config Static Data checksum failed")
    if (-sum(data[:-1])) & 0xFF != data[-1]:
        raise Rejected("NV_ERR_NOT_SUPPORTED", "Config Static Data checksum failed")


@dataclass
class PowerModeInfo:
    """The fields of NV0000_CTRL_SYSTEM_NVPCF_GET_POWER_MODE_INFO_PARAMS the parsers fill."""

    cpu_type: int = 0
    gpu_type: int = 0
    version: int = 0
    sampling_period_ms: int = 0
    entry_count: int = 0
    boost_controller: bool = False
    sampling_multi: int = 0
    filter_type: int = 0
    filter_weight: int = 0
    inc_ratio: int = 0
    dec_ratio: int = 0
    support_batt: bool = False
    sysdev_header_ok: bool = True
    dynamic: dict[str, int | bool] = field(default_factory=dict)


def sysdev_parse_static_table_2x(data: bytes, info: PowerModeInfo) -> int:
    """_sysDeviceParseStaticTable_2x: header "3b" (version 0x20, header size 3, common size 1),
    common "1b" (CPU type bits 3:0, GPU type 7:4). Its status is not checked by its caller:
    on a bad header the controller table is looked for at offset 0."""
    version, header_size, common_size = config_read_structure(data, 0, "3b")
    if (version, header_size, common_size) != (0x20, 3, 1):
        info.sysdev_header_ok = False  # NV_PRINTF "NVPCF: ...: Unsupported header"
        return 0
    (param0,) = config_read_structure(data, header_size, "1b")
    info.cpu_type, info.gpu_type = param0 & 0xF, param0 >> 4 & 0xF
    return header_size + common_size


def controller_parse_static_table_v22(data: bytes, info: PowerModeInfo) -> None:
    """_controllerParseStaticTable_v22: versions 0x22 to 0x25 only; anything else is
    NV_ERR_NOT_SUPPORTED (the caller then tries v2.0). Only the version check is needed here:
    the table under test is v2.0."""
    if len(data) < 4:
        raise Rejected("NV_ERR_NOT_SUPPORTED", "shorter than the v2.2 header")
    version, header_size, entry_size, entry_count = config_read_structure(data, 0, "4b")
    if version not in (0x22, 0x23, 0x24, 0x25):
        raise Rejected("NV_ERR_NOT_SUPPORTED", f"controller table version {version:#x} is not 2.2 to 2.5")
    if header_size != 4 or entry_size != 5 or entry_count == 0 or 4 + entry_count * 5 != len(data):
        raise Rejected("NV_ERR_INVALID_DATA", "v2.2 header sizes")
    raise AssertionError("a v2.2+ table: not what gpupass writes")


def controller_parse_static_table_v20(data: bytes, info: PowerModeInfo) -> None:
    """_controllerParseStaticTable_v20: header "5b" (version 0x20/0x21, header size 5,
    common size 2, entry size 0x0F, at least one entry, sizes adding up to the data exactly),
    common "1w" (base sampling period, not 0), entries "1b1w3d" (flags0 class 3:0: 1 PPAB,
    the Dynamic Boost controller; 2 CTGP; 0 disabled)."""
    if len(data) < 5:
        raise Rejected("NV_ERR_NOT_SUPPORTED", "shorter than the v2.0 header")
    version, header_size, common_size, entry_size, entry_count = config_read_structure(data, 0, "5b")
    if version not in (0x20, 0x21):
        raise Rejected("NV_ERR_NOT_SUPPORTED", f"controller table version {version:#x} is not 2.0 or 2.1")
    if (header_size, common_size, entry_size) != (5, 2, 0x0F):
        raise Rejected("NV_ERR_INVALID_DATA", "header, common or entry size is not 5, 2, 15")
    if entry_count == 0:
        raise Rejected("NV_ERR_INVALID_DATA", "no controller entries")
    expected_size = header_size + common_size + entry_count * entry_size
    if expected_size != len(data):
        raise Rejected("NV_ERR_INVALID_DATA", f"sizes add up to {expected_size} bytes, the table has {len(data)}")
    (period,) = config_read_structure(data, header_size, "1w")
    if period == 0:
        raise Rejected("NV_ERR_INVALID_DATA", "base sampling period 0")
    info.sampling_period_ms = period
    for n in range(entry_count):
        flags0, multi, filters, param0, param1 = config_read_structure(data, 5 + 2 + n * 0x0F, "1b1w3d")
        if flags0 & 0xF == 1:  # _controllerBuildConfig_ and _controllerBuildQboostConfig_StaticTable_v20
            info.boost_controller = True
            info.sampling_multi = multi
            info.filter_type = filters & 0xFF
            info.filter_weight = filters >> 8 & 0xFF  # EWMA weight (type 0)
            info.inc_ratio, info.dec_ratio = param0 & 0xFFFF, param0 >> 16
            info.support_batt = bool(param1 & 1)
        elif flags0 & 0xF == 2:  # _controllerBuildCtgpConfig_StaticTable_2x
            info.boost_controller = False
    info.version, info.entry_count = version, entry_count


def get_static(result: bytes) -> PowerModeInfo:
    """GET_STATIC case: validate, drop the checksum byte, _controllerParseStaticTable_2x
    (v2.2 first; on NV_ERR_NOT_SUPPORTED, v2.0); any failure is NV_ERR_NOT_SUPPORTED."""
    validate_config_static_table_2x(result)
    data = result[:-1]
    info = PowerModeInfo()
    if len(data) < 3:
        raise Rejected("NV_ERR_NOT_SUPPORTED", "shorter than the system-device header")
    offset = sysdev_parse_static_table_2x(data, info)
    if len(data) < offset:
        raise Rejected("NV_ERR_NOT_SUPPORTED", "shorter than the system-device table")
    controller = data[offset:]
    try:
        controller_parse_static_table_v22(controller, info)
    except Rejected as e:
        if e.status != "NV_ERR_NOT_SUPPORTED":
            raise
        controller_parse_static_table_v20(controller, info)
    return info


def dynamic_input(version: int) -> bytes:
    """The GET_DYNAMIC case's Arg3: header (the static table's version, 5, 0x10, 0x1C, 0
    entries), common param0 command GET (0), 8 zeroed entries: 245 bytes."""
    return struct.pack("<5B", version, 5, 0x10, 0x1C, 0) + bytes(16) + bytes(8 * 0x1C)


def s16(value: int) -> int:
    return value - 0x10000 if value & 0x8000 else value


def get_dynamic(result: bytes, info: PowerModeInfo) -> dict[str, int | bool]:
    """GET_DYNAMIC case: at least header + common; the header's version the static table's,
    sizes 5, 0x10, 0x1C; entries all there; power in NVPCF_DYNAMIC_PARAMS_2X_POWER_UNIT_MW."""
    if len(result) < 5 + 16:
        raise Rejected("NV_ERR_INVALID_DATA", "shorter than the dynamic header and common part")
    version, header_size, common_size, entry_size, entry_count = config_read_structure(result, 0, "5b")
    if version != info.version:
        raise Rejected("NV_ERR_INVALID_DATA", f"dynamic version {version:#x}, static {info.version:#x}")
    if (header_size, common_size, entry_size) != (5, 0x10, 0x1C):
        raise Rejected("NV_ERR_INVALID_DATA", "header, common or entry size is not 5, 16, 28")
    if len(result) < 5 + 0x10 + entry_count * 0x1C:
        raise Rejected("NV_ERR_INVALID_DATA", "fewer entries than the header says")
    common = config_read_structure(result, 5, "4d")
    out: dict[str, int | bool] = {}
    for n in range(entry_count):
        p = config_read_structure(result, 5 + 0x10 + n * 0x1C, "7d")
        out["enable_ac"] = not p[0] >> 8 & 1
        out["ctgp_offset_mw"] = 125 * s16(common[0] & 0xFFFF)
        out["target_tpp_offset_mw"] = 125 * s16(p[1] & 0xFFFF)
        out["max_output_offset_mw"] = 125 * s16(p[2] & 0xFFFF)
        out["min_output_offset_mw"] = 125 * s16(p[3] & 0xFFFF)
        out["enable_dc"] = not p[0] >> 9 & 1
        if info.version < 0x22:
            # The driver reads the DC offsets from its own input's common part (common.param0,
            # not commonOut): 0 whatever the table says. Re-implemented as written.
            out["ctgp_batt_offset_mw"] = 125 * s16(0)
            out["target_tpp_batt_offset_mw"] = 125 * s16(p[1] >> 16)
    return out


# acpiexec ---------------------------------------------------------------------------------


def run(*argv: str | Path, cwd: Path) -> str:
    result = subprocess.run(
        [str(a) for a in argv], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert result.returncode == 0, f"{argv[0]} failed ({result.returncode}):\n{result.stdout}"
    return result.stdout


# acpiexec takes a command line of at most a few hundred characters, too short for the
# driver's 245-byte dynamic-params input: a test table makes the call with it.
CALLER = """\
DefinitionBlock ("", "SSDT", 2, "GPUTST", "CALLER", 1)
{{
    External (\\_SB.NPCF._DSM, MethodObj)
    Method (\\CALL, 0, NotSerialized)
    {{
        Return (\\_SB.NPCF._DSM (Buffer (0x10) {{ {guid} }}, {revision:#x}, {function:#x},
            Buffer ({size:#x}) {{ {arg3} }}))
    }}
}}
"""


def hex_bytes(data: bytes) -> str:
    return ", ".join(f"0x{b:02X}" for b in data)


def dsm(aml_file: Path, function: int, arg3: bytes = b"\0", revision: int = REVISION_2X, guid: uuid.UUID = GUID):
    """``\\_SB.NPCF._DSM`` as the driver calls it (GUID, revision, function, Arg3 a buffer),
    from a caller table compiled by iasl: the returned buffer's bytes, or the integer returned."""
    work = Path(tempfile.mkdtemp(prefix="call-", dir=aml_file.parent))
    asl = CALLER.format(
        guid=hex_bytes(guid.bytes_le), revision=revision, function=function, size=len(arg3), arg3=hex_bytes(arg3)
    )
    (work / "caller.asl").write_text(asl)
    run("iasl", "-vs", "-p", work / "caller", work / "caller.asl", cwd=work)
    out = run("acpiexec", "-b", "evaluate \\CALL", DSDT, aml_file, work / "caller.aml", cwd=work)
    assert "3 ACPI AML tables successfully acquired and loaded" in out, out
    assert "Error" not in out and "AE_" not in out, out
    integer = re.search(r"\[Integer\] = ([0-9A-F]+)", out)
    if integer:
        return int(integer.group(1), 16)
    return acpiexec_buffer(out)


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The NVPCF SSDT as the package ships it (iasl at build, header checked)."""
    files = nvpcf.render(nvpcf_model(), render.Templates())
    path = tmp_path_factory.mktemp("nvpcf") / "ssdt-nvpcf.aml"
    path.write_bytes(files[NVPCF_AML])
    return path


@pytest.mark.tool
def test_the_driver_reads_functions_0_1_and_2_over_qemus_dsdt(table: Path) -> None:
    funcs = get_supported(dsm(table, 0))
    assert all(function_enabled(funcs, f) for f in (0, 1, 2))
    assert not function_enabled(funcs, 8)  # no DC system power limits table: a v2.0 table needs none

    info = get_static(dsm(table, 1))
    assert info.sysdev_header_ok and (info.cpu_type, info.gpu_type) == (0, 0)  # Intel CPU, NVIDIA GPU
    assert (info.version, info.entry_count, info.sampling_period_ms) == (0x20, 1, 100)
    assert info.boost_controller and (info.sampling_multi, info.filter_type, info.filter_weight) == (1, 0, 232)
    assert (info.inc_ratio, info.dec_ratio, info.support_batt) == (3686, 4096, False)

    dynamic = get_dynamic(dsm(table, 2, dynamic_input(info.version)), info)
    assert dynamic == {
        "enable_ac": True,
        "ctgp_offset_mw": -3000,
        "target_tpp_offset_mw": 80000,
        "max_output_offset_mw": 35000,
        "min_output_offset_mw": -5000,
        "enable_dc": False,
        "ctgp_batt_offset_mw": 0,
        "target_tpp_batt_offset_mw": 80000,
    }
    # A set (input command 1) gets the same parameters back.
    set_command = bytearray(dynamic_input(info.version))
    set_command[5] = 1
    assert get_dynamic(dsm(table, 2, bytes(set_command)), info) == dynamic


@pytest.mark.tool
def test_on_battery_and_an_amd_cpu_reach_the_tables(tmp_path: Path) -> None:
    text = (ROOT / "models" / "lenovo-legion-5-15arh05.toml").read_text(encoding="utf-8")
    m = model.parse(text + SETTINGS + "nvpcf_on_battery = true\n", "lenovo-legion-5-15arh05", "x")
    path = tmp_path / "ssdt-nvpcf.aml"
    path.write_bytes(nvpcf.render(m, render.Templates())[NVPCF_AML])
    info = get_static(dsm(path, 1))
    assert (info.cpu_type, info.support_batt) == (1, True)
    assert get_dynamic(dsm(path, 2, dynamic_input(0x20)), info)["enable_dc"] is True


@pytest.mark.tool
def test_other_revisions_guids_and_functions_get_no_table(table: Path) -> None:
    assert dsm(table, 1, revision=0x100) == 0x80000002  # NVPCF 1.x: not offered
    assert dsm(table, 3) == 0x80000002
    assert dsm(table, 0, guid=uuid.UUID("a486d8f8-0bda-471b-a72b-6042a6b5bee0")) == b"\0"  # another GUID


def test_a_corrupted_table_is_rejected_by_the_drivers_checks() -> None:
    good = nvpcf.static_tables(nvpcf_model())
    assert get_static(good).version == 0x20
    with pytest.raises(Rejected) as e:
        get_static(good[:-1] + bytes([good[-1] ^ 1]))
    assert (e.value.status, e.value.why) == ("NV_ERR_NOT_SUPPORTED", "Config Static Data checksum failed")
    wrong_size = bytearray(good[:-1])
    wrong_size[4 + 3] = 0x0E  # the controller header's entry size
    with pytest.raises(Rejected) as e:
        get_static(nvpcf.checksummed(bytes(wrong_size)))
    assert (e.value.status, e.value.why) == ("NV_ERR_INVALID_DATA", "header, common or entry size is not 5, 2, 15")
    short = bytearray(good[:-2])  # one byte of the entry missing; the header still says one entry
    with pytest.raises(Rejected) as e:
        get_static(nvpcf.checksummed(bytes(short)))
    assert (e.value.status, e.value.why) == ("NV_ERR_INVALID_DATA", "sizes add up to 22 bytes, the table has 21")
    with pytest.raises(Rejected) as e:
        get_dynamic(nvpcf.dynamic_params(nvpcf_model()), PowerModeInfo(version=0x21))
    assert (e.value.status, e.value.why) == ("NV_ERR_INVALID_DATA", "dynamic version 0x20, static 0x21")


@pytest.mark.tool
def test_iasl_disassembles_the_device(table: Path) -> None:
    aml.check(table.read_bytes(), "GPUPAS", "NVPCF", 1)
    run("iasl", "-d", table.name, cwd=table.parent)
    dsl = table.with_suffix(".dsl").read_text()
    for line in (
        "Device (NPCF)",
        'Name (_HID, "NVDA0820")  // _HID: Hardware ID',
        'Name (_UID, "NPCF")  // _UID: Unique ID',
        'If ((Arg0 == ToUUID ("36b49710-2483-11e7-9598-0800200c9a66") /* Unknown UUID */))',
    ):
        assert line in dsl, dsl


def test_only_a_model_that_turns_it_on_gets_the_table(aurora: model.Model) -> None:
    templates = render.Templates()
    assert nvpcf.render(aurora, templates) == {}
    assert f"file={paths.NVPCF_AML}" not in domain.qemu_args(aurora)
    on = nvpcf_model()
    args = domain.qemu_args(on)
    assert args[-2:] == ("-acpitable", f"file={paths.NVPCF_AML}")
    (drop_in,) = apparmor.render(on, templates).values()
    assert f"{paths.NVPCF_AML} r,\n" in drop_in.decode()
    (drop_in,) = apparmor.render(aurora, templates).values()
    assert str(paths.NVPCF_AML) not in drop_in.decode()


def test_attach_adds_the_table_and_undo_takes_it_out() -> None:
    """vm attach: the -acpitable argument (never libvirt's one raw table, the battery's);
    detach undoes attach's journal, so the argument goes with it."""
    from gpupass.laptop.vm import xmledit

    from .test_vm import SMALL_DOMAIN

    on = nvpcf_model()
    root = xmledit.parse(SMALL_DOMAIN)
    vm_pieces.apply(root, vm_pieces.Context(on, native_acpi_table=True))
    args = [a.get("value") for a in root.iterfind("qemu:commandline/qemu:arg", xmledit.NAMESPACES)]
    assert args[args.index(f"file={paths.NVPCF_AML}") - 1] == "-acpitable"
    assert vm_pieces.missing_pieces(xmledit.to_text(root), on) == []
    assert any("NVPCF" in line for line in vm_pieces.missing_pieces(SMALL_DOMAIN, on))
    editor = xmledit.Editor(xmledit.parse(xmledit.to_text(root)))
    editor.undo()
    assert str(paths.NVPCF_AML) not in xmledit.to_text(editor.root)
