"""The laptop side: what the installed ``gpupass`` command runs on the laptop.

Standard library and libvirt only; never imports ``gpupass.packaging``.
"""
