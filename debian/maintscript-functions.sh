# Shared by gpupass-<model>'s maintainer scripts; gpupass pastes it in place of the
# #GPUPASS_FUNCTIONS# line when it generates a model's source package (postrm cannot
# source a file from the package: by then the package's files are gone).

gpupass_in_container() {
	command -v systemd-detect-virt >/dev/null 2>&1 && systemd-detect-virt --quiet --container
}

# Regenerate grub.cfg so the kernel command line follows the grub.d drop-in, but only
# where GRUB is really in charge of this machine's boot.
gpupass_update_grub() {
	if gpupass_in_container; then
		echo "gpupass: inside a container: not running update-grub." >&2
	elif ! command -v update-grub >/dev/null 2>&1 || [ ! -e /boot/grub/grub.cfg ]; then
		echo "gpupass: GRUB is not set up here (no update-grub or /boot/grub/grub.cfg): kernel command line left alone." >&2
	else
		update-grub
	fi
}

gpupass_reboot_required() {
	if [ -x /usr/share/update-notifier/notify-reboot-required ]; then
		DPKG_MAINTSCRIPT_PACKAGE="$1" /usr/share/update-notifier/notify-reboot-required
	elif [ -d /run ] && ! gpupass_in_container; then
		touch /run/reboot-required
		grep -qsx "$1" /run/reboot-required.pkgs || echo "$1" >> /run/reboot-required.pkgs
	fi
}

# libvirt before 10 (Debian 12) has no "include if exists <abstractions/libvirt-qemu.d>" in its
# QEMU abstraction, so the package's drop-in there is not read. The fix is one line in the
# admin's own local file, which a package must not edit: say so instead.
gpupass_apparmor_notice() {
	abstraction=/etc/apparmor.d/abstractions/libvirt-qemu
	if [ -e "$abstraction" ] && ! grep -qs 'abstractions/libvirt-qemu\.d' "$abstraction"; then
		cat >&2 <<'NOTICE'
gpupass: this libvirt's AppArmor profile does not read /etc/apparmor.d/abstractions/libvirt-qemu.d/,
  so the VM may be denied the vBIOS and the battery table. Allow them with:
    echo 'include if exists <abstractions/libvirt-qemu.d>' >> /etc/apparmor.d/local/abstractions/libvirt-qemu
NOTICE
	fi
}
