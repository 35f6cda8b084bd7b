"""Synthetic BIDS cohort generator (demo data and tests): see :mod:`.cohort` and :mod:`.cli`.

Modules: ``geometry`` (grids, orientations, transforms, resampling) · ``phantom`` (template-space
head model, T1w/PET intensities, lesions, noise) · ``subject`` (one subject's random draws and
images) · ``cohort`` (BIDS writer) · ``cli`` (``pseudopet-simulate``).
"""
