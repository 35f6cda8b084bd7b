"""Which references judge a run's clusters (``--cluster-inference``): the controls' cluster
calibration and asymmetry maps stored with the normative model, or the fallbacks.

``auto`` uses the controls' calibration when one exists for this model, rule and detection
settings, with at least :data:`calibration.MIN_CONTROLS` controls, and otherwise falls back to
the random-field p-value, saying why; ``controls`` refuses to run without it (exit 64, with
the fix); ``random-field`` never uses it. The controls' asymmetry maps, when stored, are used
in every mode (a fixed AI cut-off otherwise).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from pseudopet_bids.config import RunConfig
from pseudopet_bids.detect import asymmetry, calibration, normative
from pseudopet_bids.detect.confidence import Evidence
from pseudopet_bids.errors import UsageError
from pseudopet_bids.synthesis.select import ModelChoice

LOGGER = logging.getLogger(__name__)


def detection_settings(cfg: RunConfig) -> dict[str, object]:
    """The settings a calibration must share with the analysis (:data:`calibration.SETTINGS`)."""
    det = cfg.detection
    return {"rule": det.z_reference, "z_threshold": det.z_threshold,
            "cluster_min_volume": det.cluster_min_volume, "connectivity": det.connectivity,
            "gm_threshold": det.gm_threshold, "search_region": det.search_region,
            # how the pseudo-normal PET was made changes the controls' clusters too
            "pseudo_calibration": cfg.synthesis.calibration,
            "n_samples": cfg.synthesis.n_samples}


def resolve_evidence(cfg: RunConfig, model: ModelChoice) -> tuple[Evidence, str]:
    """The run's :class:`Evidence` and one sentence saying what p-values it gives.

    Raises
    ------
    UsageError
        ``--cluster-inference controls`` without a usable calibration (exit 64).
    """
    mode = cfg.detection.cluster_inference
    out = Path(cfg.input.output_dir)
    folder = out / "models" / normative.folder_name(model.label)
    rebuild = (f"run the participant level on the controls with these settings, then "
               f"pseudopet BIDS OUT group --build-normative --model {cfg.synthesis.model} "
               "with the same detection options (--z-threshold, --cluster-min-volume, "
               "--connectivity, --gm-threshold, --search-region)")
    nulls: dict[str, calibration.ClusterNull] = {}
    reference = None
    card: dict[str, Any] = {}
    problem = ""
    try:
        _, card = normative.load(folder)
        nulls, reference = normative.load_evidence(folder, card)
        if card.get("model_sha256") != model.sha256:
            problem = f"its normative model was built with other {model.label} weights"
            nulls = {}
    except FileNotFoundError:
        problem = f"no normative model of {model.label} (models/{folder.name})"
    except (ValueError, OSError, KeyError) as exc:
        problem = f"the normative model is unreadable ({exc})"
    null = nulls.get(cfg.detection.z_reference)
    if not problem:
        if null is None:
            problem = (f"the normative model holds no cluster calibration of the "
                       f"{cfg.detection.z_reference!r} rule")
        elif null.mismatch(detection_settings(cfg)):
            changed = ", ".join(null.mismatch(detection_settings(cfg)))
            problem = f"its cluster calibration was made with other settings ({changed})"
        elif len(null.masses) < calibration.MIN_CONTROLS:
            problem = (f"its cluster calibration has {len(null.masses)} controls; it needs "
                       f"{calibration.MIN_CONTROLS}")
    if reference is not None and len(reference.controls) < asymmetry.MIN_CONTROLS + 1:
        reference = None  # a leave-one-out control would be left with too few
    if mode == "controls" and problem:
        raise UsageError(f"--cluster-inference controls: {problem}", folder, rebuild)
    use_null = null if (mode != "random-field" and not problem) else None
    # identity for the output hash: the calibration used and the stored maps' digest (from the
    # card, checked when the folder was loaded)
    digest = hashlib.sha256()
    if use_null is not None:
        digest.update(json.dumps(use_null.to_dict(), sort_keys=True).encode())
    if reference is not None:
        digest.update(str(card["evidence_sha256"][normative.ASYMMETRY_FILE]).encode())
    sha = digest.hexdigest() if (use_null is not None or reference is not None) else ""
    if use_null is not None:
        note = (f"cluster p-values calibrated on {len(use_null.masses)} healthy controls "
                f"(models/{folder.name})")
    elif mode == "random-field":
        note = "cluster p-values from random-field theory (--cluster-inference random-field)"
    else:
        note = (f"cluster p-values from random-field theory, the fallback: {problem}; to "
                f"calibrate them on healthy controls, {rebuild}")
    note += "; asymmetry " + (f"against {len(reference.controls)} controls" if reference
                              is not None else f"with the fixed cut-off AI <= "
                              f"{asymmetry.FIXED_AI:g} %")
    return Evidence(use_null, reference, sha), note
