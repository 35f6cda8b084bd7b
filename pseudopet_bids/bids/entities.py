"""BIDS file-name entities (``sub-01_ses-1_trc-FDG_pet.nii.gz`` → ``{"sub": "01", ...}``)."""

from __future__ import annotations

from pathlib import Path

#: Entities of a PET source file kept in derivative names, in BIDS order.
PET_ENTITIES = ("sub", "ses", "task", "trc", "rec", "run")


def parse_entities(path: str | Path) -> dict[str, str]:
    """Key-value entities of a BIDS file name (the suffix and extension are dropped)."""
    ents: dict[str, str] = {}
    for part in Path(path).name.split("_")[:-1]:
        if "-" in part:
            key, value = part.split("-", 1)
            ents[key] = value
    return ents


def entity_prefix(path: str | Path, keep: tuple[str, ...] = PET_ENTITIES) -> str:
    """``sub-01_ses-1_trc-FDG`` from a BIDS file name, keeping ``keep`` in BIDS order."""
    ents = parse_entities(path)
    return "_".join(f"{k}-{ents[k]}" for k in keep if k in ents)
