"""Maps the top-level adapters/ and examples/ folders to voiceagent.adapters and voiceagent.examples
(the README's packaging notes): the demo's agent and cassettes ship in the wheel."""

from setuptools import find_packages, setup

core = find_packages(include=["voiceagent", "voiceagent.*"])
mapped = [
    "voiceagent." + name
    for name in find_packages(include=["adapters", "adapters.*", "examples", "examples.*"])
]
setup(packages=core + mapped)
