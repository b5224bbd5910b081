"""ament_python needs data files (resource index marker, package.xml, launch/config/graph
files) and node executables under lib/latentstack that pyproject.toml cannot express; everything
else lives in pyproject.toml."""
from glob import glob

from setuptools import setup

setup(
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/latentstack"]),
        ("share/latentstack", ["package.xml"]),
        ("share/latentstack/launch", glob("ros/launch/*.launch.py")),
        ("share/latentstack/config", glob("ros/config/*.yaml")),
        ("share/latentstack/graphs", glob("ros/graphs/*.yaml")),
    ],
    # Node executables are [project.scripts] in pyproject.toml; setup.cfg puts them in lib/latentstack.
)
