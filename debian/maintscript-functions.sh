# Shared by gpupass-<model>'s maintainer scripts; gpupass pastes it in place of their
# GPUPASS_FUNCTIONS line when it generates a model's source package (postrm cannot
# source a file from the package: by then the package's files are gone). The package also
# ships it as /usr/lib/gpupass/maintscript-functions.sh, which gpupass mode runs.

gpupass_in_container() {
	command -v systemd-detect-virt >/dev/null 2>&1 && systemd-detect-virt --quiet --container
}

# Regenerate grub.cfg so the kernel command line follows the grub.d drop-in, but only
# where GRUB is really in charge of this machine's boot. Elsewhere (systemd-boot and
# kernel-install, another loader) nothing is edited: say which arguments to add or remove
# where ($1: add or remove; $2: the arguments, when not the model's own mode's).
gpupass_update_grub() {
	args=${2:-#KERNEL_ARGS#}
	if gpupass_in_container; then
		echo "gpupass: inside a container: not running update-grub." >&2
	elif ! command -v update-grub >/dev/null 2>&1 || [ ! -e /boot/grub/grub.cfg ]; then
		if [ "$1" = add ]; then
			action="add these arguments to the kernel command line yourself"
		else
			action="remove these arguments from the kernel command line yourself"
		fi
		cat >&2 <<NOTICE
gpupass: GRUB is not set up here (no update-grub or /boot/grub/grub.cfg): kernel command line left alone.
  For passthrough, $action:
    $args
  systemd-boot / kernel-install: edit /etc/kernel/cmdline (start from /proc/cmdline if it does not
  exist), then run: kernel-install add-all. After the reboot, gpupass doctor checks /proc/cmdline.
NOTICE
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

# libvirt before 9.6 (Debian 12's 9.0) has no "include if exists <abstractions/libvirt-qemu.d>"
# in its QEMU abstraction, so the package's drop-in there is not read. The fix is one line in
# the admin's own local file, which a package must not edit: say so instead, but only where
# neither the installed abstraction nor that local file includes the directory. Decided by
# the files' content, not by libvirt's version.
gpupass_apparmor_notice() {
	abstraction=/etc/apparmor.d/abstractions/libvirt-qemu
	local_file=/etc/apparmor.d/local/abstractions/libvirt-qemu
	includes='^[[:space:]]*#\{0,1\}include[[:space:]]*\(if exists[[:space:]]*\)\{0,1\}<abstractions/libvirt-qemu\.d>'
	if [ -e "$abstraction" ] && ! grep -qs "$includes" "$abstraction" "$local_file"; then
		cat >&2 <<'NOTICE'
gpupass: this libvirt's AppArmor profile does not read /etc/apparmor.d/abstractions/libvirt-qemu.d/,
  so the VM may be denied the vBIOS and the battery table. Allow them with:
    echo 'include if exists <abstractions/libvirt-qemu.d>' >> /etc/apparmor.d/local/abstractions/libvirt-qemu
NOTICE
	fi
}

# The initramfs trigger rebuilds the image of the newest kernel only (initramfs-tools'
# update-initramfs -u and dracut's trigger alike), the one the next boot starts by default.
# Where older kernels are installed, say that their images keep the old state ($1: the
# state they keep) and how to rebuild them all.
gpupass_initramfs_notice() {
	kernels=$(linux-version list 2>/dev/null | linux-version sort 2>/dev/null) || return 0
	[ "$(echo "$kernels" | grep -c .)" -gt 1 ] || return 0
	if command -v update-initramfs >/dev/null 2>&1; then
		rebuild="update-initramfs -u -k all"
	else
		rebuild="dracut --regenerate-all --force"
	fi
	cat >&2 <<NOTICE
gpupass: only the newest kernel's initramfs ($(echo "$kernels" | tail -n 1)) is rebuilt, and the next boot
  starts that kernel by default. The other installed kernels keep $1 until: $rebuild
NOTICE
}

# Regenerate the newest kernel's initramfs outside a dpkg run (gpupass mode): through the same
# dpkg trigger the package's install activates, processed at once, so the release's own
# initramfs tool (initramfs-tools or dracut) does it exactly as on install.
gpupass_update_initramfs() {
	dpkg-trigger --no-await update-initramfs
	dpkg --triggers-only --pending
}

# What gpupass mode wrote: the mode, and the /etc overrides masking the package's files.
gpupass_mode_forget() {
	rm -f /var/lib/gpupass/mode /etc/modprobe.d/$1.conf /etc/dracut.conf.d/$1.conf \
		/etc/udev/rules.d/70-$1-desktop.rules
}
