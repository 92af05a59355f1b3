"""doctor's checks of the VM: OVMF, libvirt, AppArmor, the domain holding every passthrough
piece, and the experimental NVPCF table it loads."""

from __future__ import annotations

from ... import paths
from ...model import Model
from ..machine import Machine
from ..vm import looking_glass, pieces, xmledit
from .facts import APPARMOR_ABSTRACTION, APPARMOR_INCLUDE, APPARMOR_LINE, APPARMOR_LOCAL, Facts
from .finding import FAIL, OK, WARN, Finding


def check_ovmf(model: Model, m: Machine, facts: Facts) -> list[Finding]:
    files = (model.vm.ovmf_code, model.vm.ovmf_vars)
    absent = [p for p in files if p not in facts.present]
    if absent:
        return [Finding("ovmf", FAIL, f"no OVMF firmware file {', '.join(absent)}", "sudo apt install ovmf")]
    return [Finding("ovmf", OK, f"OVMF without Secure Boot is there ({', '.join(files)})")]


def check_libvirt(model: Model, m: Machine, facts: Facts) -> list[Finding]:
    lv = facts.libvirt
    if lv.no_python_api:
        return [Finding("libvirt", WARN, f"libvirt not checked: {lv.problem}", "sudo apt install python3-libvirt")]
    if lv.problem:
        return [
            Finding(
                "libvirt",
                FAIL,
                lv.problem,
                "sudo systemctl start libvirtd (or virtqemud.socket, where libvirt's modular daemons run),"
                " and run gpupass doctor as root or as a member of the libvirt group",
            )
        ]
    v = lv.survey.version
    return [Finding("libvirt", OK, f"libvirt {v // 1000000}.{v // 1000 % 1000}.{v % 1000} answers at {lv.uri}")]


def check_apparmor(model: Model, m: Machine, facts: Facts) -> list[Finding]:
    drop_in = f"/etc/apparmor.d/abstractions/libvirt-qemu.d/{model.package}"
    if APPARMOR_ABSTRACTION not in facts.apparmor:
        return [Finding("apparmor", OK, f"AppArmor: no {APPARMOR_ABSTRACTION} here, nothing confines QEMU's files")]
    if any(APPARMOR_INCLUDE.search(text) for text in facts.apparmor.values()):
        return [Finding("apparmor", OK, f"AppArmor: libvirt's QEMU abstraction reads {drop_in}")]
    return [
        Finding(
            "apparmor",
            FAIL,
            f"AppArmor: libvirt's QEMU abstraction does not read {drop_in},"
            " so the VM may be denied the vBIOS and the battery table",
            f"echo '{APPARMOR_LINE}' | sudo tee -a {APPARMOR_LOCAL}",
        )
    ]


def check_vm(model: Model, m: Machine, facts: Facts) -> list[Finding]:
    lv, name = facts.libvirt, facts.vm_name
    if lv.problem:
        return [Finding("vm", WARN, f"VM {name} not checked: libvirt not reached", "see the libvirt check")]
    survey = lv.survey
    if survey.domain_xml is None:
        return [
            Finding(
                "vm",
                FAIL,
                f"no libvirt domain {name} (domains: {', '.join(survey.domains) or 'none'})",
                f"sudo gpupass vm define {name}, or for a VM of your own: sudo gpupass vm attach NAME,"
                " then gpupass doctor --vm NAME",
            )
        ]
    attach = f"shut the VM off, then sudo gpupass vm attach {name}"
    found = []
    for piece, what in pieces.missing(survey.domain_xml, model, survey.host_cpus):
        if piece == pieces.FIRMWARE_PIECE:
            why = pieces.secure_boot(xmledit.parse(survey.domain_xml))
            found.append(Finding("vm", FAIL, f"VM {name} boots a Secure Boot firmware: {why}", attach))
        elif piece == pieces.HYPERV_PIECE:
            # Passthrough works without them; every one missing costs the guest latency.
            found.append(Finding("vm", WARN, f"VM {name} lacks {piece}: {what}", attach))
        else:
            found.append(Finding("vm", FAIL, f"VM {name} lacks {piece}: {what}", attach))
    if not found:
        found.append(
            Finding(
                "vm",
                OK,
                f"VM {name} holds every passthrough piece (hostdevs on one multifunction slot, vBIOS rom,"
                " MMIO window, battery table, SMBIOS, no Secure Boot)",
            )
        )
    # Not a passthrough piece (attach adds none, a user's TPM is theirs), but Windows 11
    # setup refuses a machine without one.
    if xmledit.parse(survey.domain_xml).find("devices/tpm") is None:
        found.append(
            Finding(
                "vm",
                WARN,
                f"VM {name} has no TPM, and Windows 11 setup refuses a machine without TPM 2.0",
                f"with swtpm and swtpm-tools installed, shut the VM off, then sudo virt-xml {name} --add-device"
                " --tpm model=tpm-crb,backend.type=emulator,backend.version=2.0",
            )
        )
    return found


def check_nvpcf(model: Model, m: Machine, facts: Facts) -> list[Finding]:
    """guest.nvpcf is experimental: said on every run, with what the table offers."""
    if not model.nvpcf:
        return []
    if not facts.nvpcf_aml:
        return [
            Finding(
                "nvpcf",
                FAIL,
                f"no NVPCF SSDT at {paths.NVPCF_AML}: a VM that loads it does not start",
                f"sudo apt install --reinstall {model.package}",
            )
        ]
    g = model.guest
    return [
        Finding(
            "nvpcf",
            WARN,
            f"NVPCF is experimental: the guest gets a static \\_SB.NPCF for Dynamic Boost (TPP offset"
            f" {g.nvpcf_tpp_offset_w} W, TGP offset {g.nvpcf_min_tgp_offset_w} W to {g.nvpcf_max_tgp_offset_w} W,"
            f" {'also' if g.nvpcf_on_battery else 'not'} on battery), proven in emulation, not yet on a laptop",
            "if Windows stops with ACPI_BIOS_ERROR, rebuild with guest.nvpcf = false;"
            " report how it went (README: NVPCF)",
        )
    ]


def check_looking_glass(model: Model, m: Machine, facts: Facts) -> list[Finding]:
    """A domain with Looking Glass: its shared memory as the client needs it (size, group, mode)."""
    survey, name = facts.libvirt.survey, facts.vm_name
    if facts.libvirt.problem or survey is None or survey.domain_xml is None:
        return []
    asked = looking_glass.in_domain(xmledit.parse(survey.domain_xml))
    if asked is None:
        return []
    mib, file = asked.size // looking_glass.MIB, asked.file
    kvmfr = file == looking_glass.KVMFR_DEVICE
    tmpfiles = f"sudo systemd-tmpfiles --create /usr/lib/tmpfiles.d/{model.package}.conf"
    reload = f"sudo modprobe kvmfr static_size_mb={mib}"
    group, wanted = paths.LOOKING_GLASS_GROUP, paths.LOOKING_GLASS_MODE
    state = facts.shared_files.get(file)
    problems: list[tuple[str, str]] = []
    if state is None and kvmfr:
        problems.append((f"VM {name} maps {file} for Looking Glass: there is none, kvmfr is not loaded", reload))
    elif state is None:
        problems.append(
            (f"VM {name} maps {file} for Looking Glass: there is none yet", f"{tmpfiles} (the package's boot entry)")
        )
    elif kvmfr and state.kind != "char":
        problems.append(
            (
                f"{file} is a {state.kind}, not kvmfr's device: QEMU made it before the module was loaded",
                f"shut VM {name} off, then sudo rm {file} && {reload}",
            )
        )
    elif not kvmfr and state.kind != "file":
        problems.append((f"{file} is a {state.kind}, not a file", f"sudo rm {file} && {tmpfiles}"))
    elif not kvmfr and state.size not in (0, asked.size):
        problems.append(
            (
                f"{file} is {state.size / looking_glass.MIB:g} MiB and VM {name} asks for {mib} MiB:"
                " QEMU does not resize it",
                f"shut VM {name} off, then sudo rm {file} && {tmpfiles}",
            )
        )
    if state is not None and (state.group != group or state.mode & wanted != wanted):
        udev = f'SUBSYSTEM=="kvmfr", GROUP="{group}", MODE="{wanted:04o}" in /etc/udev/rules.d/70-kvmfr.rules'
        problems.append(
            (
                f"{file} is group {state.group}, mode {state.mode:04o}: the client, run by a user in group"
                f" {group}, cannot read and write it",
                f"the udev rule of Looking Glass's docs: {udev}" if kvmfr else tmpfiles,
            )
        )
    if problems:
        return [Finding("looking-glass", FAIL, what, fix) for what, fix in problems]
    size = f"{mib} MiB" if kvmfr or state.size else f"empty until VM {name} starts, then {mib} MiB"
    return [
        Finding(
            "looking-glass",
            OK,
            f"Looking Glass: {file} ({size}) is group {group}'s to read and write; the guest's Looking Glass"
            f" and the client on this laptop must both be release {looking_glass.RELEASE}",
        )
    ]
