# A shim for stdeb, which drives setuptools through setup.py; everything else is declared
# in pyproject.toml. When gpupass generates a model's source package it writes that
# model's package description (synopsis line, blank line, long text) to
# package-description.txt, which stdeb turns into the Description in debian/control.
from pathlib import Path

from setuptools import setup

text = Path(__file__).with_name("package-description.txt")
if text.exists():
    synopsis, _, long_text = text.read_text(encoding="utf-8").partition("\n\n")
    setup(description=synopsis.strip(), long_description=long_text.strip())
else:  # readme is dynamic too (pyproject.toml): give it, or setuptools refuses the project
    synopsis = "Laptop NVIDIA dGPU passthrough to a Windows VM, one package per laptop model"
    setup(description=synopsis, long_description=synopsis)
