"""``gpupass doctor``: the checks by area (host, rom, vm, power) over the machine snapshot and
the facts gathered once (facts), run and reported by diagnose."""
