"""gpupass mode: when the dGPU goes to vfio-pci, at boot or on demand (see model.MODES)."""
