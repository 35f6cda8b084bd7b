"""pseudopet: pseudo-normal FDG PET from T1w MRI for epileptic focus localization (BIDS App)."""

__version__ = "0.1.0"
