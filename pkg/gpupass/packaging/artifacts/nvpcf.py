"""The experimental NVPCF SSDT (guest.nvpcf): a static NVIDIA Platform Controllers and
Framework device, \\_SB.NPCF, whose _DSM offers Dynamic Boost with the model's values.

The layouts are NVIDIA's, from open-gpu-kernel-modules (595.45.04):

- kernel-open/nvidia/nv-acpi.c, nv_acpi_dsm_method: the driver evaluates the absolute path
  ``\\_SB.NPCF._DSM`` (so the device sits in \\_SB under that name), but first requires the
  GPU itself to have an ACPI node (``ACPI_HANDLE(nvl->dev)``, else NV_ERR_INVALID_ARGUMENT):
  QEMU's own node for the GPU behind gpupass's root port is that node; no _DSM of the
  GPU's is asked for NVPCF, so this table adds none.
- src/nvidia/src/kernel/platform/guids.c and interface/acpidsmguids.h: the GUID and
  revision 0x200 (NVPCF 2.x).
- src/nvidia/src/kernel/rmapi/client_resource.c, cliresCtrlCmdSystemNVPCFGetPowerModeInfo_IMPL:
  function 0 must return a 4-byte value with bit 0 set (and, as checkDsmCall in
  platform/acpi_common.c caches it, a bit per supported function); function 1 the static
  tables, checked by _validateConfigStaticTable_2x (two's-complement checksum in the last
  byte, 2 to 255 bytes) and parsed by _controllerParseStaticTable_2x (system-device header
  and common byte, then the controller table, here v2.0 as _controllerParseStaticTable_v20
  reads it); function 2 the dynamic parameters (v2.x header, common and entry, power in
  1/8 W units), whose version must be the static table's.

Everything here is constant per model: the SSDT is built with iasl at package build.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ... import paths
from ...model import Model
from .. import aml
from . import ssdt

TEMPLATE = "ssdt-nvpcf.asl.j2"
ASL_NAME = "ssdt-nvpcf.asl"
OEM_TABLE_ID = "NVPCF"

GUID = "36b49710-2483-11e7-9598-0800200c9a66"
REVISION = 0x200
# Functions 0 (supported functions), 1 (static config tables), 2 (dynamic params).
SUPPORTED = (1 << 0) | (1 << 1) | (1 << 2)

STATIC_VERSION = 0x20  # the system-device table, and the controller table (v2.0)
CPU_TYPE = {"intel": 0, "amd": 1}  # NVPCF_SYSDEV_STATIC_TABLE_COMMON_2X_PARAM0_CPU_TYPE_*
SAMPLING_PERIOD_MS = 100  # CONTROLLER_GRP_DEFAULT_BASE_SAMPLING_PERIOD_MS
CLASS_PPAB = 1  # ..._ENTRY_V20_FLAGS0_CLASS_PPAB: the Dynamic Boost controller
FILTER_EWMA, EWMA_WEIGHT = 0, 232  # the RM's own defaults for its controller
INCREASE_GAIN, DECREASE_GAIN = 3686, 4096  # 0.9 and 1.0 in unsigned 4.12 fixed point
POWER_UNIT_MW = 125  # NVPCF_DYNAMIC_PARAMS_2X_POWER_UNIT_MW


def checksummed(data: bytes) -> bytes:
    """``data`` and the byte that makes the whole sum to 0 mod 256 (_validateConfigStaticTable_2x)."""
    return data + bytes([-sum(data) & 0xFF])


def static_tables(model: Model) -> bytes:
    """Function 1's buffer: system-device table 2.x, controller table 2.0 with one Dynamic Boost
    (PPAB) controller, checksum."""
    sysdev = struct.pack("<BBBB", 0x20, 3, 1, CPU_TYPE[model.cpu.vendor] | 0 << 4)  # GPU type 0: NVIDIA
    header = struct.pack("<BBBBB", STATIC_VERSION, 5, 2, 0x0F, 1)
    common = struct.pack("<H", SAMPLING_PERIOD_MS)
    entry = struct.pack(
        "<BHIII",
        CLASS_PPAB,
        1,  # sampling multiplier
        FILTER_EWMA | EWMA_WEIGHT << 8,
        INCREASE_GAIN | DECREASE_GAIN << 16,
        int(model.guest.nvpcf_on_battery),  # param1 bit 0: Dynamic Boost on DC
    )
    return checksummed(sysdev + header + common + entry)


def _units(watts: int) -> int:
    """Watts as the 16-bit two's-complement 1/8 W field the dynamic table carries."""
    return (watts * 1000 // POWER_UNIT_MW) & 0xFFFF


def dynamic_params(model: Model) -> bytes:
    """Function 2's buffer: the v2.x dynamic parameters for the one controller (index 0)."""
    g = model.guest
    header = struct.pack("<BBBBB", STATIC_VERSION, 5, 0x10, 0x1C, 1)
    ctgp = _units(g.nvpcf_ctgp_offset_w)
    common = struct.pack("<IIII", ctgp | ctgp << 16, 0, 0, 0)  # configurable TGP offset on AC | on DC
    tpp = _units(g.nvpcf_tpp_offset_w)
    disable_dc = 0 if g.nvpcf_on_battery else 1
    entry = struct.pack(
        "<7I",
        0 | disable_dc << 9,  # controller 0; bit 8 (disable on AC) clear
        tpp | tpp << 16,  # target TPP offset on AC | on DC
        _units(g.nvpcf_max_tgp_offset_w),
        _units(g.nvpcf_min_tgp_offset_w),
        0,
        0,
        0,
    )
    return header + common + entry


@dataclass(frozen=True)
class Table:
    """A buffer as the ASL template writes it: hex bytes, 8 a line."""

    data: bytes

    @property
    def size(self) -> str:
        return f"0x{len(self.data):02X}"

    @property
    def lines(self) -> list[str]:
        rows = [self.data[i : i + 8] for i in range(0, len(self.data), 8)]
        return [", ".join(f"0x{b:02X}" for b in row) for row in rows]


def render_asl(model: Model, templates) -> str:
    return templates.render(
        TEMPLATE,
        model,
        acpi=model.acpi,
        guest=model.guest,
        oem_table_id=OEM_TABLE_ID,
        guid=GUID,
        revision=REVISION,
        supported=SUPPORTED,
        static=Table(static_tables(model)),
        dynamic=Table(dynamic_params(model)),
    ).decode("ascii")


def render(model: Model, templates) -> dict[str, bytes]:
    if not model.nvpcf:
        return {}
    asl = render_asl(model, templates)
    data = ssdt.compile_asl(asl, ASL_NAME, "the NVPCF SSDT")
    aml.check(data, model.acpi.oem_id, OEM_TABLE_ID, model.acpi.oem_revision)
    share = str(paths.SHARE).lstrip("/")
    return {f"{share}/{ASL_NAME}": asl.encode("ascii"), str(paths.NVPCF_AML).lstrip("/"): data}
