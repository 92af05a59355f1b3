"""``gpupass power``: the laptop's power source drives the VM, and the user sees what the dGPU does.

- ``apply`` (apply.py; run by gpupass-power.service, which the udev rule starts when the AC
  adapter comes or goes): reads the power source again and does what /etc/gpupass/power.conf
  asks. On battery a running VM is told about (``notify``) or asked to shut down
  (``shutdown``: the ACPI power button, and the guest agent where the domain has one), never
  forced off; on AC a shut-off VM is started only with ``on_ac = start``.
- ``record`` (status.py; run by the libvirt hook when the domain is released): a few seconds
  later, whether each passed function reached runtime suspend and the GPU D3cold, and why not.
- ``status`` (status.py): AC or battery, the draw and charge, the VM, each passed function's
  power state, the last release record. Reads only world-readable files and libvirt's
  read-only socket.

What to do is ``policy.decide``, a pure function of (config, AC state, domain state) whose
answers are ``ACTIONS``: there is no forced stop among them, and libvirtconn has no call for one.
Standard library only.
"""
