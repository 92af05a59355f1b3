"""Machines for the probe tests, from PCI layouts people published for their computers.

Each Layout names the post its layout comes from (``source``), what the post shows
(``published``), and what is filled in by assumption because the post does not show it
(``assumed``): posts give `lspci -nn` lines and IOMMU groups, rarely BAR sizes, CPU
topology, DMI strings or the battery. ``tests/sysfs.py`` writes a layout as a sysfs/procfs
tree (``python3 -m tests.sysfs LAYOUT DIR`` for a tree to run ``gpupass probe --root DIR`` on).

Every assumed PCI id was checked against Debian 12's /usr/share/misc/pci.ids (2023) for the
device it stands for, except four that file does not list yet: 10de:10fa (TU117 HD audio),
10de:22be (AD107 HD audio), 8086:a706 and 8086:a70d (Raptor Lake host bridge and PEG port).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .sysfs import AURORA_Z_PCI, MIB, BarSpec, Dev, changed

GIB = 1024 * MIB


@dataclass(frozen=True)
class Layout:
    name: str
    source: str
    published: str
    assumed: str
    devices: dict[str, Dev]
    cpu: str  # vendor_id
    cpu_model: str
    cores: tuple[tuple[int, ...], ...]
    tables: tuple[str, ...]
    dmi: dict[str, str] = field(default_factory=dict)
    battery: dict[str, str] | None = None
    p_cores: str | None = None

    def build(self, root, **changes):
        from .sysfs import build_sysfs

        kwargs = dict(
            devices=self.devices,
            cpu=self.cpu,
            cpu_model=self.cpu_model,
            cores=self.cores,
            p_cores=self.p_cores,
            tables=self.tables,
            dmi=self.dmi,
            battery=self.battery,
        )
        return build_sysfs(root, **{**kwargs, **changes})


def smt(cores: int, siblings_apart: bool) -> tuple[tuple[int, ...], ...]:
    """Cores with two threads: (0, 1), (2, 3)... or, as AMD and many Intel CPUs number them, (0, n), (1, n+1)..."""
    if siblings_apart:
        return tuple((n, n + cores) for n in range(cores))
    return tuple((2 * n, 2 * n + 1) for n in range(cores))


# Typical NVIDIA laptop GPU BARs: registers, VRAM aperture (Resizable BAR), and a 32 MiB window.
NVIDIA_BARS = (
    BarSpec(0, 16 * MIB, is_64bit=False, prefetchable=False),
    BarSpec(1, 256 * MIB, resizable_mib=(64, 128, 256, 512, 1024, 2048, 4096, 8192)),
    BarSpec(3, 32 * MIB),
)
# Without Resizable BAR: the MX330's regions in https://github.com/canonical/nvidia-prime/pull/12.
FIXED_NVIDIA_BARS = (
    BarSpec(0, 16 * MIB, is_64bit=False, prefetchable=False),
    BarSpec(1, 256 * MIB),
    BarSpec(3, 32 * MIB),
)
HDA_BARS = (BarSpec(0, 16 * 1024, is_64bit=False, prefetchable=False),)


AURORA_Z = Layout(
    name="aurora-z",
    source="../shared/docs/passthrough-notes.md (the public write-up of the reference setup)",
    published="GPU 10de:25a2 and HDMI audio 10de:2291 in IOMMU group 14; i7-12450H (4 P-cores with"
    " Hyper-Threading, 4 E-cores); iGPU drives the panel; 47 Wh battery by design, 85 % health",
    assumed="the other PCI devices and the root port (tests/sysfs.py's reference tree), BAR sizes,"
    " subsystem ids (left 0000:0000: not in the write-up), DMI strings as models/aurora-z.toml has"
    " them, the battery's design voltage (15.4 V, as models/aurora-z.toml)",
    devices={
        **AURORA_Z_PCI,
        "0000:01:00.0": Dev(
            "10de:25a2", "0x030000", 14, "0000:00:01.0", boot_vga="0", subsystem="0000:0000", bars=NVIDIA_BARS
        ),
        "0000:01:00.1": Dev("10de:2291", "0x040300", 14, "0000:00:01.0", subsystem="0000:0000", bars=HDA_BARS),
    },
    cpu="GenuineIntel",
    cpu_model="12th Gen Intel(R) Core(TM) i7-12450H",
    cores=(*smt(4, siblings_apart=False), (8,), (9,), (10,), (11,)),
    p_cores="0-7",
    tables=("DMAR", "DSDT", "FACP"),
    dmi={
        "sys_vendor": "MECHREVO",
        "product_name": "Aurora Z",
        "product_version": "1.0",
        "product_family": "Aurora",
        "chassis_type": "10",
    },
    battery={
        "energy_full_design": "47000000",
        "energy_full": "39950000",
        "voltage_min_design": "15400000",
        "technology": "Li-ion",
    },
)

HP_VICTUS_16_RTX4060 = Layout(
    name="hp-victus-16-rtx4060",
    source="https://github.com/olealgoritme/gddr6/pull/55",
    published="an HP Victus 16 with an RTX 4060 Laptop GPU, AD107M, PCI id 10de:28a0",
    assumed="everything else: a 13th-gen Intel hybrid CPU (i7-13700H: 6 P-cores with Hyper-Threading"
    " as CPUs 0-11, 8 E-cores 12-19), the GPU at 01:00.0 behind the CPU's root port 00:01.0 and alone"
    " with it and its audio function 10de:22be in one IOMMU group, the Intel iGPU at 00:02.0 driving"
    " the panel, BAR sizes, DMI strings, a 70 Wh battery; subsystem ids not published (0000:0000)",
    devices={
        "0000:00:00.0": Dev("8086:a706", "0x060000", 0),
        "0000:00:01.0": Dev("8086:a70d", "0x060400", 2),
        "0000:00:02.0": Dev("8086:a7a0", "0x030000", 1, boot_vga="1", driver="i915"),
        "0000:00:14.0": Dev("8086:51ed", "0x0c0330", 5),
        "0000:01:00.0": Dev(
            "10de:28a0",
            "0x030000",
            2,
            "0000:00:01.0",
            boot_vga="0",
            subsystem="0000:0000",
            bars=NVIDIA_BARS,
            driver="nvidia",
        ),
        "0000:01:00.1": Dev("10de:22be", "0x040300", 2, "0000:00:01.0", subsystem="0000:0000", bars=HDA_BARS),
    },
    cpu="GenuineIntel",
    cpu_model="13th Gen Intel(R) Core(TM) i7-13700H",
    cores=(*smt(6, siblings_apart=False), *((n,) for n in range(12, 20))),
    p_cores="0-11",
    tables=("DMAR", "DSDT", "FACP"),
    dmi={
        "sys_vendor": "HP",
        "product_name": "Victus by HP Gaming Laptop 16-r0xxx",
        "product_version": "Type1ProductConfigId",
        "product_family": "103C_5335KV HP Victus",
        "chassis_type": "10",
    },
    battery={"energy_full_design": "70070000", "energy_full": "68900000", "voltage_min_design": "15400000"},
)

LENOVO_LEGION_5_15ARH05 = Layout(
    name="lenovo-legion-5-15arh05",
    source="https://github.com/antony-jr/lenovo-legion5-15arh05-scripts/issues/8",
    published="dmesg of a Legion 5 15ARH05 (AMD Ryzen 4000): the dGPU on bus 01 with two functions"
    " (01:00.1's D0 depends on 01:00.0), bus 01's 64-bit prefetchable window of 288 MiB"
    " (0x1f850000000-0x1f861ffffff: 256 + 32 MiB BARs), the Renoir iGPU's bus 05",
    assumed="the GPU's ids (the GTX 1650 Ti the 15ARH05 ships with: TU117M 10de:1f95, audio 10de:10fa),"
    " the GPP bridges above them (00:01.1, 00:08.1), IOMMU groups, the iGPU (1002:1636) driving the panel,"
    " the CPU (Ryzen 7 4800H, 8 cores with SMT), DMI strings, a 60 Wh battery; subsystem ids not published",
    devices={
        "0000:00:00.0": Dev("1022:1630", "0x060000", 0),
        "0000:00:01.1": Dev("1022:1633", "0x060400", 1),
        "0000:00:08.1": Dev("1022:1635", "0x060400", 5),
        "0000:01:00.0": Dev(
            "10de:1f95",
            "0x030000",
            9,
            "0000:00:01.1",
            boot_vga="0",
            subsystem="0000:0000",
            bars=FIXED_NVIDIA_BARS,
        ),
        "0000:01:00.1": Dev("10de:10fa", "0x040300", 9, "0000:00:01.1", subsystem="0000:0000", bars=HDA_BARS),
        "0000:05:00.0": Dev("1002:1636", "0x030000", 5, "0000:00:08.1", boot_vga="1", driver="amdgpu"),
        "0000:05:00.1": Dev("1002:1637", "0x040300", 5, "0000:00:08.1"),
    },
    cpu="AuthenticAMD",
    cpu_model="AMD Ryzen 7 4800H with Radeon Graphics",
    cores=smt(8, siblings_apart=True),
    tables=("IVRS", "DSDT", "FACP"),
    dmi={
        "sys_vendor": "LENOVO",
        "product_name": "82B5",
        "product_version": "Lenovo Legion 5 15ARH05",
        "product_family": "Legion 5 15ARH05",
        "chassis_type": "10",
    },
    battery={"energy_full_design": "60000000", "energy_full": "57300000", "voltage_min_design": "15360000"},
)

LENOVO_IDEAPAD_5_15ITL05 = Layout(
    name="lenovo-ideapad-5-15itl05",
    source="https://github.com/HikariKnight/ls-iommu/issues/3",
    published="a Lenovo Ideapad 5 15ITL05: `01:00.0 3D controller [0302]: NVIDIA TU117M [GeForce MX450]"
    " [10de:1f97]` (no audio function) and the Tiger Lake iGPU 00:02.0 [8086:9a49] in IOMMU group 0",
    assumed="the root port above the GPU (00:1c.0) and the GPU's IOMMU group (alone with it), BAR sizes"
    " (those of the MX330 in https://github.com/canonical/nvidia-prime/pull/12: 16 MiB, 256 MiB, 32 MiB),"
    " the CPU (i5-1135G7: 4 cores with Hyper-Threading), DMI strings, a 57 Wh battery reported in"
    " charge units; subsystem id not published",
    devices={
        "0000:00:00.0": Dev("8086:9a14", "0x060000", 1),
        "0000:00:02.0": Dev("8086:9a49", "0x030000", 0, boot_vga="1", driver="i915"),
        "0000:00:1c.0": Dev("8086:a0b0", "0x060400", 8),
        "0000:01:00.0": Dev(
            "10de:1f97",
            "0x030200",
            8,
            "0000:00:1c.0",
            subsystem="0000:0000",
            bars=FIXED_NVIDIA_BARS,
        ),
    },
    cpu="GenuineIntel",
    cpu_model="11th Gen Intel(R) Core(TM) i5-1135G7 @ 2.40GHz",
    cores=smt(4, siblings_apart=True),
    tables=("DMAR", "DSDT", "FACP"),
    dmi={
        "sys_vendor": "LENOVO",
        "product_name": "82FG",
        "product_version": "IdeaPad 5 15ITL05",
        "product_family": "IdeaPad 5 15ITL05",
        "chassis_type": "10",
    },
    battery={"charge_full_design": "3711000", "charge_full": "3500000", "voltage_min_design": "15360000"},
)

HP_VICTUS_16_NAVI23 = Layout(
    name="hp-victus-16-navi23",
    source="https://github.com/bottlesdevs/programs/issues/248",
    published="an HP laptop's `lspci -v`: 03:00.0 Display controller (class 0x0380) Navi 23 [Radeon RX"
    " 6600M], subsystem Hewlett-Packard 103c:8902, behind the Navi 10 XL switch's upstream port 01:00.0"
    " (IOMMU group 12) and downstream port 02:00.0 (group 13), with an 8448 MiB 64-bit prefetchable window"
    " (an 8 GiB VRAM BAR and a 256 MiB BAR)",
    assumed="the GPU's PCI id (the post names the chip, Navi 23 RX 6600M: 1002:73ff), its own IOMMU group"
    " (with its audio function 1002:ab28), the switch ports' ids"
    " (1002:1478/1479), the GPP bridges, the AMD iGPU (Cezanne 1002:1638 at 07:00.0) driving the panel,"
    " the CPU (Ryzen 5 5600H, 6 cores with SMT), DMI strings (a Victus 16 with a Ryzen CPU), a 70 Wh battery",
    devices={
        "0000:00:00.0": Dev("1022:1630", "0x060000", 0),
        "0000:00:01.1": Dev("1022:1633", "0x060400", 1),
        "0000:00:08.1": Dev("1022:1635", "0x060400", 5),
        "0000:01:00.0": Dev("1002:1478", "0x060400", 12, "0000:00:01.1"),
        "0000:02:00.0": Dev("1002:1479", "0x060400", 13, "0000:01:00.0"),
        "0000:03:00.0": Dev(
            "1002:73ff",
            "0x038000",
            14,
            "0000:02:00.0",
            subsystem="103c:8902",
            bars=(
                BarSpec(0, 8 * GIB, resizable_mib=(256, 512, 1024, 2048, 4096, 8192)),
                BarSpec(2, 256 * MIB),
                BarSpec(5, 1 * MIB, is_64bit=False, prefetchable=False),
            ),
        ),
        "0000:03:00.1": Dev("1002:ab28", "0x040300", 14, "0000:02:00.0", subsystem="103c:8902", bars=HDA_BARS),
        "0000:07:00.0": Dev("1002:1638", "0x030000", 5, "0000:00:08.1", boot_vga="1", driver="amdgpu"),
        "0000:07:00.1": Dev("1002:1637", "0x040300", 5, "0000:00:08.1"),
    },
    cpu="AuthenticAMD",
    cpu_model="AMD Ryzen 5 5600H with Radeon Graphics",
    cores=smt(6, siblings_apart=True),
    tables=("IVRS", "DSDT", "FACP"),
    dmi={
        "sys_vendor": "HP",
        "product_name": "Victus by HP Laptop 16-e0xxx",
        "product_version": "Type1ProductConfigId",
        "product_family": "103C_5335KV HP Victus",
        "chassis_type": "10",
    },
    battery={"energy_full_design": "70070000", "energy_full": "70070000", "voltage_min_design": "15400000"},
)

TURING_FOUR_FUNCTIONS = Layout(
    name="turing-four-functions",
    source="https://github.com/NVIDIA/kubevirt-gpu-device-plugin/issues/50",
    published="IOMMU group 1: root port 00:01.0 [8086:1901] with the GTX 1660 SUPER's four functions, VGA"
    " 01:00.0 [10de:21c4], audio 01:00.1 [10de:1aeb], USB 01:00.2 [10de:1aec], USB-C UCSI 01:00.3 [10de:1aed];"
    " the Comet Lake-S iGPU 00:02.0 [8086:9bc8] in group 2 (a desktop)",
    assumed="that the iGPU is the boot display, BAR sizes, the CPU's topology (a 6-core Comet Lake-S),"
    " no DMI strings but the chassis type (3: desktop), no battery, subsystem ids not published",
    devices={
        "0000:00:00.0": Dev("8086:9b53", "0x060000", 0),
        "0000:00:01.0": Dev("8086:1901", "0x060400", 1),
        "0000:00:02.0": Dev("8086:9bc8", "0x030000", 2, boot_vga="1"),
        "0000:01:00.0": Dev(
            "10de:21c4", "0x030000", 1, "0000:00:01.0", boot_vga="0", subsystem="0000:0000", bars=NVIDIA_BARS
        ),
        "0000:01:00.1": Dev("10de:1aeb", "0x040300", 1, "0000:00:01.0", bars=HDA_BARS),
        "0000:01:00.2": Dev(
            "10de:1aec", "0x0c0330", 1, "0000:00:01.0", bars=(BarSpec(0, 256 * 1024, prefetchable=False),)
        ),
        "0000:01:00.3": Dev(
            "10de:1aed", "0x0c8000", 1, "0000:00:01.0", bars=(BarSpec(0, 4096, is_64bit=False, prefetchable=False),)
        ),
    },
    cpu="GenuineIntel",
    cpu_model="Intel(R) Core(TM) i5-10400 CPU @ 2.90GHz",
    cores=smt(6, siblings_apart=True),
    tables=("DMAR", "DSDT", "FACP"),
    dmi={"chassis_type": "3"},
)

DESKTOP_ONLY_GPU = Layout(
    name="desktop-only-gpu",
    source="https://github.com/foxlet/vmra1n/issues/4",
    published="an X58 desktop's IOMMU groups: the only GPU, GTX 1060 6GB 02:00.0 [10de:1c03] with its audio"
    " 02:00.1 [10de:10f1], in group 11; X58 has no integrated graphics",
    assumed="the root port above the GPU (00:03.0), that the GPU is the boot display (it is the only one),"
    " the CPU's topology, DMI strings",
    devices={
        "0000:00:00.0": Dev("8086:3405", "0x060000", 0),
        "0000:00:03.0": Dev("8086:340a", "0x060400", 3),
        "0000:02:00.0": Dev("10de:1c03", "0x030000", 11, "0000:00:03.0", boot_vga="1", bars=NVIDIA_BARS),
        "0000:02:00.1": Dev("10de:10f1", "0x040300", 11, "0000:00:03.0", bars=HDA_BARS),
    },
    cpu="GenuineIntel",
    cpu_model="Intel(R) Xeon(R) CPU X5650 @ 2.67GHz",
    cores=smt(6, siblings_apart=True),
    tables=("DMAR", "DSDT", "FACP"),
    dmi={"chassis_type": "3"},
)

GROUP_WITH_A_NIC = Layout(
    name="group-with-a-nic",
    source="https://github.com/T-vK/MobilePassThrough/issues/22",
    published="an ASUS GL552VW on which MobilePassThrough reports, as found in the IOMMU group of the GPU,"
    " `IOMMU Group 12 03:00.0 [ff00] Realtek RTL8411B card reader [10ec:5287]` and `IOMMU Group 12 03:00.1"
    " Ethernet controller [0200] Realtek RTL8111/8168/8411 [10ec:8168]`",
    assumed="that group 12 is the dGPU's (taking the tool's report at its word), the dGPU itself (the"
    " GL552VW's GTX 960M: GM107M 10de:139b, a 3D controller without audio) at 01:00.0, the root ports,"
    " the CPU (i7-6700HQ), DMI strings, the battery",
    devices={
        "0000:00:00.0": Dev("8086:1910", "0x060000", 0),
        "0000:00:02.0": Dev("8086:191b", "0x030000", 1, boot_vga="1"),
        "0000:00:1c.0": Dev("8086:a110", "0x060400", 12),
        "0000:00:1c.2": Dev("8086:a112", "0x060400", 12),
        "0000:01:00.0": Dev("10de:139b", "0x030200", 12, "0000:00:1c.0", bars=NVIDIA_BARS),
        "0000:03:00.0": Dev("10ec:5287", "0xff0000", 12, "0000:00:1c.2"),
        "0000:03:00.1": Dev("10ec:8168", "0x020000", 12, "0000:00:1c.2"),
    },
    cpu="GenuineIntel",
    cpu_model="Intel(R) Core(TM) i7-6700HQ CPU @ 2.60GHz",
    cores=smt(4, siblings_apart=True),
    tables=("DMAR", "DSDT", "FACP"),
    dmi={"sys_vendor": "ASUSTeK COMPUTER INC.", "product_name": "GL552VW", "chassis_type": "10"},
    battery={"energy_full_design": "48000000", "energy_full": "41000000", "voltage_min_design": "14400000"},
)

DELL_XPS_15_9570 = Layout(
    name="dell-xps-15-9570",
    source="https://github.com/jscinoz/optimus-vfio-docs/issues/2",
    published="a Dell XPS 15 9570's IOMMU group: the root port `00:01.0 PCI bridge [0604]: Intel Xeon"
    " E3-1200 v5/E3-1500 v5/6th Gen Core Processor PCIe Controller (x16) [8086:1901] (rev 07)` and"
    " `01:00.0 3D controller [0302]: NVIDIA GP107M [GeForce GTX 1050 Ti Mobile] [10de:1c8c] (rev a1)`"
    " (no audio function), the Intel iGPU beside it",
    assumed="the group's number, the iGPU (the i7-8750H's UHD Graphics 630, 8086:3e9b) driving the panel,"
    " the host bridge (8086:3ec4), BAR sizes (those of the MX330 in"
    " https://github.com/canonical/nvidia-prime/pull/12), the CPU (i7-8750H: 6 cores with Hyper-Threading),"
    " DMI strings (Dell's for the 9570), a 97 Wh battery; subsystem ids not published",
    devices={
        "0000:00:00.0": Dev("8086:3ec4", "0x060000", 0),
        "0000:00:01.0": Dev("8086:1901", "0x060400", 1),
        "0000:00:02.0": Dev("8086:3e9b", "0x030000", 2, boot_vga="1", driver="i915"),
        "0000:01:00.0": Dev("10de:1c8c", "0x030200", 1, "0000:00:01.0", subsystem="0000:0000", bars=FIXED_NVIDIA_BARS),
    },
    cpu="GenuineIntel",
    cpu_model="Intel(R) Core(TM) i7-8750H CPU @ 2.20GHz",
    cores=smt(6, siblings_apart=True),
    tables=("DMAR", "DSDT", "FACP"),
    dmi={
        "sys_vendor": "Dell Inc.",
        "product_name": "XPS 15 9570",
        "product_family": "XPS",
        "chassis_type": "10",
    },
    battery={"charge_full_design": "8509000", "charge_full": "7900000", "voltage_min_design": "11400000"},
)

# The aurora-z with the firmware set to discrete graphics: the dGPU is the boot display.
AURORA_Z_DGPU_BOOT = changed(changed(AURORA_Z.devices, "0000:01:00.0", boot_vga="1"), "0000:00:02.0", boot_vga="0")

LAYOUTS = {
    layout.name: layout
    for layout in (
        AURORA_Z,
        HP_VICTUS_16_RTX4060,
        LENOVO_LEGION_5_15ARH05,
        LENOVO_IDEAPAD_5_15ITL05,
        HP_VICTUS_16_NAVI23,
        TURING_FOUR_FUNCTIONS,
        DESKTOP_ONLY_GPU,
        GROUP_WITH_A_NIC,
        DELL_XPS_15_9570,
    )
}
