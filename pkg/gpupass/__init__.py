"""gpupass: turn one laptop model file into an installable, revertible passthrough .deb."""

__version__ = "0.1.0"
