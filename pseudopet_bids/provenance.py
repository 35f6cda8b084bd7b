"""Software provenance: the versions recorded in analysis records, model cards and citations."""

from __future__ import annotations

import importlib
import importlib.metadata
import platform

from pseudopet_bids import __version__

#: Distribution name -> import name of the packages whose versions the text reports.
PACKAGES: dict[str, str] = {
    "numpy": "numpy", "scipy": "scipy", "nibabel": "nibabel", "nilearn": "nilearn",
    "antspyx": "ants", "torch": "torch", "deepbet": "deepbet", "pybids": "bids",
    "templateflow": "templateflow", "safetensors": "safetensors", "scikit-image": "skimage",
}
NOT_INSTALLED = "not installed"


def software_versions() -> dict[str, str]:
    """Versions of ``pseudopet``, ``python`` and each distribution of :data:`PACKAGES`.

    A package that cannot be found reads ``"not installed"``.
    """
    versions = {"pseudopet": __version__, "python": platform.python_version()}
    for dist, module in PACKAGES.items():
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            try:  # installed without metadata (e.g. a source checkout on sys.path)
                versions[dist] = str(importlib.import_module(module).__version__)
            except Exception:
                versions[dist] = NOT_INSTALLED
    return versions
