"""Maps the top-level folders onto one import namespace, ``worldweave.*``.

``bridge/`` installs as ``worldweave.bridge``, ``server/`` as ``worldweave.server`` and so on, so no generic
top-level name (``bridge``, ``server``) lands in site-packages. Subpackages are discovered, so a new folder with
an ``__init__.py`` needs no edit here.
"""

from setuptools import find_packages, setup

TOP_LEVEL = ("bridge", "proto", "server", "sim_clients")

packages = []
package_dir = {}
for top in TOP_LEVEL:
    package_dir[f"worldweave.{top}"] = top
    packages.append(f"worldweave.{top}")
    packages += [f"worldweave.{top}.{sub}" for sub in find_packages(where=top)]

setup(
    packages=packages,
    package_dir=package_dir,
    package_data={
        "worldweave.proto": ["worldweave/v1/*.proto", "worldweave/v1/*.pyi"],
        "worldweave.bridge.memory": ["weights/*.safetensors"],  # the learned weaver's shipped weights
    },
)
