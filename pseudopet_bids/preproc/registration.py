"""The T1w ↔ template mapping as the rest of the package sees it (a typed joint).

:class:`~pseudopet_bids.preproc.template_reg.TemplateRegistration` (ANTs) implements it; tests
and reused derivatives may give another implementation. Synthesis, detection and the outputs
depend on this protocol only, never on ANTs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import nibabel as nib
import numpy as np


@runtime_checkable
class Registration(Protocol):
    """A mapping between a subject's T1w grid and the template."""

    #: The voxel-to-RAS affine of the T1w grid.
    t1_affine: np.ndarray

    def to_t1(self, img: nib.Nifti1Image, interpolation: str = "nearest", *,
              crop: bool = True) -> nib.Nifti1Image:
        """Resample a template-space image onto the T1w grid."""
        ...

    def to_template(self, img: nib.Nifti1Image, interpolation: str = "linear",
                    reference: nib.Nifti1Image | None = None) -> nib.Nifti1Image:
        """Resample a T1w-space image into template space."""
        ...

    def points_to_template(self, xyz: np.ndarray) -> np.ndarray:
        """Map (N, 3) T1w scanner RAS mm to (N, 3) template RAS mm."""
        ...

    def write(self, forward_path: Path, inverse_path: Path) -> None:
        """Write the forward and inverse transforms."""
        ...
