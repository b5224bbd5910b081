"""ament_python needs data files (resource index marker, package.xml, launch/param/graph files, suites,
default configs) and node executables under lib/latentstack that pyproject.toml cannot express;
everything else lives in pyproject.toml.

The same layout serves a wheel install (``pip install``: files under ``<prefix>/share/latentstack`` and
``<prefix>/lib/latentstack``) and a colcon install; :mod:`latentstack.core.paths` finds the data by name
in either. Node executables are plain scripts in ``ros/bin`` installed to ``lib/latentstack``, where
``ros2 run latentstack <node>`` looks, so a pip user's PATH only gains ``lstack``.
"""
from glob import glob
from pathlib import Path

from setuptools import setup

PKG = "latentstack"


def files(pattern: str) -> list[str]:
    found = sorted(glob(pattern))
    if not found:  # an empty glob would silently ship a package without its data
        raise SystemExit(f"setup.py: no files match {pattern!r}")
    return found


# the artifacts the launch files default to (ros/launch/*.launch.py: FindPackageShare + policies/<name>), so
# `ros2 launch latentstack metaworld.launch.py` works from any directory; every other artifact stays in the checkout
LAUNCH_ARTIFACTS = ("vla_metaworld_mt6", "lion_tiny", "stereo_sa2_tiny")
# launch defaults whose artifact is trained later (perception.launch.py unilion:=true -> policies/unilion_tiny,
# issue 17):
# installed once present, so the package builds before the artifact exists; afterwards it is checked like the rest
LATER_ARTIFACTS = ("unilion_tiny",)


def artifact_files(name: str) -> list[tuple[str, list[str]]]:
    root = Path("policies") / name
    if not (root / "config.json").is_file():
        raise SystemExit(f"setup.py: launch artifact {root} is missing its config.json")
    dirs = sorted({f.parent for f in root.rglob("*") if f.is_file()})
    return [(f"share/{PKG}/{d.as_posix()}", sorted(str(f) for f in d.iterdir() if f.is_file())) for d in dirs]


setup(
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PKG}"]),
        (f"share/{PKG}", ["package.xml"]),
        (f"share/{PKG}/launch", files("ros/launch/*.launch.py")),
        (f"share/{PKG}/config", files("ros/config/*.yaml")),
        (f"share/{PKG}/graphs", files("ros/graphs/*.yaml")),
        (f"share/{PKG}/suites", files("sim/suites/*.yaml")),
        (f"share/{PKG}/configs", files("configs/*.yaml")),
        (f"lib/{PKG}", files("ros/bin/*_node")),
        *[entry for name in LAUNCH_ARTIFACTS for entry in artifact_files(name)],
        *[entry for name in LATER_ARTIFACTS if (Path("policies") / name / "config.json").is_file()
          for entry in artifact_files(name)],
    ],
)
