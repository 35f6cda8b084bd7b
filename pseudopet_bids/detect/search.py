"""The grey matter searched for hypometabolism (where Z is computed and clusters are formed)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from pseudopet_bids.config import DetectionConfig
from pseudopet_bids.preproc.pipeline import Preprocessed


def detection_mask(pre: Preprocessed, detection: DetectionConfig) -> np.ndarray:
    """Grey matter in which Z is computed and clusters are formed.

    The subject's GM (probability ≥ ``gm_threshold``) inside the brain mask, and
    ``search_region``: ``cortex`` (default) keeps the GM of the eight lobar regions, where a focus
    can be reported; ``gm`` keeps all GM within 2 mm of an atlas GM region (adds deep grey
    nuclei, insula, cingulate and cerebellum, reported as ``other``). GM far from any atlas
    region (brainstem, ventricle walls) is never used: no region could be reported for it, and
    neither is GM where the PET has no signal (outside its field of view).
    """
    gm = (pre.tissues["GM"] >= detection.gm_threshold) & pre.mask
    if pre.pet is not None:  # outside the PET's field of view there is nothing to compare
        gm &= pre.pet > 0
    if detection.search_region == "cortex":
        return gm & (pre.lobes >= 1) & (pre.lobes <= 8)
    return gm & ndimage.binary_dilation(pre.aal > 0, iterations=2)
