"""The dGPU on the host: which driver holds it, and how asleep it is."""
