"""Which synthesis model runs: ``--model`` resolved against the output folder's trained models.

JSON and the registry only (no torch): the participant flow, the normative build and the CLI's
pre-flight all choose the model here, so they always agree on it.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from pathlib import Path

from pseudopet_bids.bids.derivatives import model_label
from pseudopet_bids.errors import InputError, UsageError
from pseudopet_bids.io.files import sha256_file
from pseudopet_bids.models.checkpoint import CARD, read_card
from pseudopet_bids.models.registry import (TISSUE, auto_order, model_names, model_spec,
                                            trainable_models)

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelChoice:
    """The synthesis model of a run.

    Attributes
    ----------
    folder
        The trained model folder, or None for a non-learned model.
    label
        Its label in file names (``desc-<label>Pseudonormal``): the folder's name, or the
        registry name of a non-learned model.
    architecture
        Its registry name (``tissue``, ``cyclegan``, …).
    sha256
        What made the pseudo-normal PET: the trained weights' sha256, or that of the
        non-learned model's source file.
    """

    folder: Path | None
    label: str
    architecture: str
    sha256: str

    @property
    def trained(self) -> bool:
        """Whether the model comes from a trained model folder."""
        return self.folder is not None


def model_folder(output_dir: Path, option: str, announce: bool = True) -> Path | None:
    """The trained model folder that ``--model option`` names, or None for a non-learned model.

    ``auto``: the trained model in OUTPUT_DIR/models/ (by the registry's ``auto`` ranking when
    several exist; several custom names must be chosen with ``--model PATH``), else ``tissue``.
    A registry name of a trainable model: OUTPUT_DIR/models/<name>. A path: that model folder.
    ``announce``: log the choice that ``auto`` made (once per run, not once per participant).

    Raises
    ------
    InputError
        No trained model where one was named (exit 66: a required input is missing).
    UsageError
        Several custom trained models with ``auto`` (exit 64).
    """
    models = Path(output_dir) / "models"
    say = LOGGER.info if announce else LOGGER.debug
    if option in model_names() and not model_spec(option).trainable:
        return None
    if option == "auto":
        trained = sorted(p.parent for p in models.glob(f"*/{CARD}"))
        if not trained:
            say("no trained model in %s: using the tissue baseline", models)
            return None
        for preferred in auto_order():
            if models / preferred in trained:
                if len(trained) > 1:
                    say("several trained models in %s: using %s", models, preferred)
                return models / preferred
        if len(trained) > 1:
            raise UsageError(f"several trained models in {models} "
                             f"({', '.join(p.name for p in trained)})", models,
                             "choose one with --model PATH")
        return trained[0]
    named = option in trainable_models()
    folder = models / option if named else Path(option)
    if not (folder / CARD).exists():
        raise InputError(f"no trained model in {folder}", folder,
                         f"train one first: pseudopet BIDS OUT group --train --model "
                         f"{option if named else trainable_models()[0]}, "
                         f"or use --model {TISSUE}")
    return folder


def choose_model(output_dir: Path, option: str, announce: bool = True) -> ModelChoice:
    """Resolve ``--model`` (see :func:`model_folder`) into a :class:`ModelChoice`."""
    folder = model_folder(output_dir, option, announce)
    if folder is None:
        name = option if option in model_names() else TISSUE
        source = inspect.getsourcefile(model_spec(name).loader())
        return ModelChoice(None, name, name, sha256_file(Path(str(source))))
    card = read_card(folder)
    return ModelChoice(folder, model_label(folder.name), str(card["model"]),
                       str(card["weights_sha256"]))
