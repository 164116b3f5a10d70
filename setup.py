"""Maps the top-level adapters/ folder to the voiceagent.adapters package (see shared DESIGN.md)."""

from setuptools import find_packages, setup

core = find_packages(include=["voiceagent", "voiceagent.*"])
adapters = ["voiceagent." + name for name in find_packages(include=["adapters", "adapters.*"])]
setup(packages=core + adapters)
