"""The grey matter searched for hypometabolism (where Z is computed and clusters are formed)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from pseudopet_bids.config import DetectionConfig
from pseudopet_bids.errors import DataError
from pseudopet_bids.preproc.pipeline import Preprocessed


def detection_mask(pre: Preprocessed, detection: DetectionConfig) -> np.ndarray:
    """Grey matter in which Z is computed and clusters are formed.

    The subject's GM (probability ≥ ``gm_threshold``) inside the brain mask, and
    ``search_region``: ``cortex`` (default) keeps the GM of the eight lobar regions, where a focus
    can be reported; ``gm`` keeps all GM within 2 mm of an atlas GM region (adds deep grey
    nuclei, insula, cingulate and cerebellum, reported as ``other``). GM far from any atlas
    region (brainstem, ventricle walls) is never used: no region could be reported for it, and
    neither is GM where the PET has no signal (outside its field of view).

    Raises
    ------
    DataError
        Nothing left to search, saying which restriction left nothing.
    """
    threshold = detection.gm_threshold
    gm = (pre.tissues["GM"] >= threshold) & pre.mask
    if not gm.any():
        raise DataError(f"no voxel of the brain has a grey-matter probability >= {threshold:g} "
                        "(--gm-threshold)", role="t1w",
                        fix="lower --gm-threshold (default 0.5), and check the grey-matter "
                            "segmentation of the T1w")
    if pre.pet is not None:  # outside the PET's field of view there is nothing to compare
        gm &= pre.pet > 0
        if not gm.any():
            raise DataError("the PET has no signal in the grey matter of the T1w", role="pet",
                            fix="give a PET covering the brain, and check its header "
                                "(orientation, origin) against the T1w")
    if detection.search_region == "cortex":
        search = gm & (pre.lobes >= 1) & (pre.lobes <= 8)
    else:
        search = gm & ndimage.binary_dilation(pre.aal > 0, iterations=2)
    if not search.any():
        region = detection.search_region
        raise DataError(f"no grey matter in the atlas regions of --search-region {region}: the "
                        "T1w does not match the template", role="t1w",
                        fix="check that the T1w is a whole-head image of a human brain"
                            + ("; try --search-region gm" if region == "cortex" else ""))
    return search
