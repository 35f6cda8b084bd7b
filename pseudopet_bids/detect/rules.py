"""Detection-rule registry: how the difference map D becomes a Z-map, and how its outputs are
named.

A rule (:class:`DetectionRule`) is chosen with ``--z-reference NAME``. Its ``suffix`` is added
to the synthesis model's label to form the *analysis label* of the Z-map, cluster table and focus
mask (``desc-<model><suffix>``), so several rules live side by side in one output folder; the
paper's rule has the empty suffix. This module owns that label grammar
(:func:`analysis_label`, :func:`parse_analysis_label`); the parser's choices, the participant
flow, the reports, the group tables and the citation text read the registry. Adding a rule is
one scorer plus one :func:`register_rule` call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pseudopet_bids.bids.derivatives import model_label
from pseudopet_bids.detect import asymmetry, normative
from pseudopet_bids.detect.zmap import zmap
from pseudopet_bids.errors import UsageError
from pseudopet_bids.preproc.registration import Registration

_BOILERPLATE = Path(__file__).resolve().parents[1] / "data" / "boilerplate"


@dataclass(frozen=True)
class RuleReference:
    """What a rule loaded once per run to score subjects against (e.g. a normative model).

    ``sha256`` identifies it in the run's output hash and sidecars; ``card`` is its
    description.
    """

    data: Any
    sha256: str
    card: dict[str, Any]


@dataclass(frozen=True)
class RuleInputs:
    """Everything a rule may use to score one subject (arrays on the subject's T1w grid)."""

    diff: np.ndarray  #: D = real − pseudo-normal PET, normalised units
    pet: np.ndarray  #: the real PET, normalised units
    search: np.ndarray  #: detection grey matter (bool): Z is wanted here only
    gm_prob: np.ndarray  #: grey-matter probability
    brain: np.ndarray  #: brain mask (bool)
    gm_threshold: float
    registration: Registration  #: T1w ↔ template
    key: str  #: ``sub-L[_ses-S]``
    reference: RuleReference | None  #: from :attr:`DetectionRule.prepare`
    #: voxel-wise SD of the averaged samples of a stochastic model, units of ``diff`` (or None)
    pseudo_sd: np.ndarray | None = None


#: (output folder, synthesis model label, its sha256, the ``--model`` value) → reference.
Prepare = Callable[[Path, str, str, str], RuleReference]
#: Inputs → (Z-map, sidecar fields).
Score = Callable[[RuleInputs], "tuple[np.ndarray, dict[str, Any]]"]


@dataclass(frozen=True)
class DetectionRule:
    """One way of turning D into Z.

    Attributes
    ----------
    name
        ``--z-reference`` value.
    suffix
        Added to the model label in file names: empty, or a capitalised word (model labels
        are lower-case, so the two never run together ambiguously).
    title
        What Z is compared with, in a few words ("own grey matter").
    reference_name
        The same, in full ("subject's own grey matter"): group tables and figure legends.
    score
        The scorer.
    methods
        Citation template (file or text) of the rule's paragraph.
    prepare
        Loads the rule's reference once per run (None: the rule needs none).
    needs
        What must exist before the rule can run, for messages and docs.
    needs_samples
        The rule reads the sample SD of a stochastic model (``--n-samples`` > 1).
    """

    name: str
    suffix: str
    title: str
    reference_name: str
    score: Score
    methods: Path | str
    prepare: Prepare | None = None
    needs: tuple[str, ...] = field(default_factory=tuple)
    needs_samples: bool = False

    def methods_text(self) -> str:
        """The citation template's text."""
        if isinstance(self.methods, Path):
            return self.methods.read_text(encoding="utf-8")
        return self.methods


_RULES: dict[str, DetectionRule] = {}


def register_rule(rule: DetectionRule) -> DetectionRule:
    """Add (or replace) a rule; returns it.

    Raises
    ------
    ValueError
        A bad name or suffix, or a suffix already used by another rule.
    """
    if not (rule.name.isascii() and rule.name.replace("-", "").isalnum()):
        raise ValueError(f"rule name {rule.name!r}: use letters, digits and '-'")
    if rule.suffix and not (rule.suffix.isascii() and rule.suffix.isalnum()
                            and rule.suffix[0].isupper()):
        raise ValueError(f"rule suffix {rule.suffix!r}: empty, or a capitalised word")
    for other in _RULES.values():
        if other.name != rule.name and other.suffix == rule.suffix:
            raise ValueError(f"rule suffix {rule.suffix!r} is already used by {other.name!r}")
    _RULES[rule.name] = rule
    return rule


def unregister_rule(name: str) -> None:
    """Remove a rule (tests register toy rules and remove them again)."""
    _RULES.pop(name, None)


def rule_names() -> tuple[str, ...]:
    """Every registered rule, the paper's first."""
    return tuple(_RULES)


def get_rule(name: str) -> DetectionRule:
    """The rule registered as ``name``.

    Raises
    ------
    ValueError
        No such rule.
    """
    try:
        return _RULES[name]
    except KeyError:
        raise ValueError(f"unknown detection rule {name!r}; choose one of "
                         f"{', '.join(rule_names())}") from None


def analysis_label(model: str, rule: str = "subject") -> str:
    """``desc`` label of the Z-map, clusters and focus mask: the model's label plus the rule's
    suffix (``tissue``, ``tissueNorm``)."""
    return model_label(model) + get_rule(rule).suffix


def parse_analysis_label(label: str) -> tuple[str, str]:
    """Inverse of :func:`analysis_label`: ``(model label, rule name)``."""
    for rule in sorted(_RULES.values(), key=lambda r: -len(r.suffix)):
        if not rule.suffix:
            return label, rule.name
        if label.endswith(rule.suffix) and len(label) > len(rule.suffix):
            return label[:-len(rule.suffix)], rule.name
    return label, "subject"


def rule_order(name: str) -> int:
    """Position of a rule in the registry (unknown names last): the order of reports."""
    names = rule_names()
    return names.index(name) if name in names else len(names)


# --------------------------------------------------------------------------- built-in rules
def score_subject(inputs: RuleInputs) -> tuple[np.ndarray, dict[str, Any]]:
    """The paper's rule: Z of D over the subject's own detection grey matter."""
    return zmap(inputs.diff, inputs.search), {
        "ZReference": "subject grey matter (mean/std of D = real - pseudo)"}


def score_spread(inputs: RuleInputs) -> tuple[np.ndarray, dict[str, Any]]:
    """The paper's rule with the voxel-wise sample spread added to the denominator."""
    if inputs.pseudo_sd is None:  # resolve_analysis refuses such a run before it starts
        raise UsageError("--z-reference spread needs the sample SD of a stochastic model",
                         None, "use SynDiff with --n-samples 2 or more")
    return zmap(inputs.diff, inputs.search, inputs.pseudo_sd), {
        "ZReference": "subject grey matter, widened by the sample spread "
                      "((D - mean D) / sqrt(var D + SD_samples^2))"}


def _load_normative(output_dir: Path, model: str, model_option: str, rule: str
                    ) -> tuple[Path, normative.NormativeStats, dict[str, Any]]:
    """``models/normative-<model>/`` of an output folder: (folder, sums, card).

    Raises
    ------
    UsageError
        No normative model for this synthesis model, or an unreadable one (with the commands
        that build it).
    """
    folder = Path(output_dir) / "models" / normative.folder_name(model)
    build = (f"build it from the controls' outputs: pseudopet BIDS OUT participant "
             f"--model {model_option} (controls), then pseudopet BIDS OUT group "
             f"--build-normative --model {model_option}")
    try:
        stats, card = normative.load(folder)
    except FileNotFoundError:
        raise UsageError(f"--z-reference {rule}: no normative model for {model}", folder,
                         build) from None
    except (ValueError, OSError, KeyError) as exc:
        raise UsageError(f"--z-reference {rule}: unreadable normative model ({exc})", folder,
                         build) from None
    return folder, stats, card


def prepare_normative(output_dir: Path, model: str, model_sha: str, model_option: str
                      ) -> RuleReference:
    """Load ``models/normative-<model>/`` and check it was built from the same weights.

    Raises
    ------
    UsageError
        No normative model for this synthesis model, an unreadable one, or one built from
        another model's weights.
    """
    folder, stats, card = _load_normative(output_dir, model, model_option, "controls")
    if card.get("model_sha256") != model_sha:
        raise UsageError("--z-reference controls: the normative model was built with other "
                         f"{model} weights", folder, "rebuild it (group --build-normative)")
    return RuleReference(stats, str(card["sha256"]), card)


def score_normative(inputs: RuleInputs) -> tuple[np.ndarray, dict[str, Any]]:
    """Z of D voxel-wise against the healthy controls' normative model."""
    assert inputs.reference is not None  # prepare_normative ran (the workflow's contract)
    card = inputs.reference.card
    z, extra = normative.zmap_against_controls(
        inputs.diff, normative.normative_gm(inputs.gm_prob, inputs.brain, inputs.gm_threshold),
        inputs.search, inputs.registration, inputs.reference.data, inputs.key)
    return z, {"ZReference": "healthy-control normative model (voxel-wise mean/std of the "
                             "controls' D - median_GM D)",
               "NormativeModel": f"models/{card.get('name', '')}",
               "NormativeSHA256": card["sha256"], **extra}


def prepare_asymmetry(output_dir: Path, model: str, model_sha: str, model_option: str
                      ) -> RuleReference:
    """Load the controls' asymmetry maps stored with ``models/normative-<model>/`` (they do
    not depend on the synthesis model's weights: the real PETs only).

    Raises
    ------
    UsageError
        No normative model with asymmetry maps for this model, or an unreadable one.
    """
    folder, _, card = _load_normative(output_dir, model, model_option, "asymmetry")
    try:
        _, reference = normative.load_evidence(folder, card)
    except (ValueError, OSError, KeyError) as exc:
        raise UsageError(f"--z-reference asymmetry: unreadable asymmetry maps ({exc})", folder,
                         f"rebuild them (group --build-normative --model {model_option})"
                         ) from None
    if reference is None:
        raise UsageError("--z-reference asymmetry: the normative model has no asymmetry maps "
                         "(built by an earlier release)", folder, "rebuild it (group "
                         f"--build-normative --model {model_option})")
    digest = card.get("evidence_sha256", {}).get(normative.ASYMMETRY_FILE, "")
    return RuleReference(reference, str(digest), card)


def score_asymmetry(inputs: RuleInputs) -> tuple[np.ndarray, dict[str, Any]]:
    """Z of the real PET's hemispheric asymmetry voxel-wise against the controls'."""
    assert inputs.reference is not None  # prepare_asymmetry ran (the workflow's contract)
    ai, both = asymmetry.subject_asymmetry(
        inputs.pet, normative.normative_gm(inputs.gm_prob, inputs.brain, inputs.gm_threshold),
        inputs.registration)
    z, extra = asymmetry.asymmetry_zmap(ai, both, inputs.reference.data, inputs.registration,
                                        inputs.search, inputs.key)
    card = inputs.reference.card
    return z, {"ZReference": "healthy controls' hemispheric asymmetry (voxel-wise asymmetry "
                             "index of the real PET against its mirror image)",
               "NormativeModel": f"models/{card.get('name', '')}",
               "AsymmetrySHA256": inputs.reference.sha256, **extra}


register_rule(DetectionRule(
    name="subject", suffix="", title="own grey matter",
    reference_name="subject's own grey matter", score=score_subject,
    methods=_BOILERPLATE / "rule_subject.md.tmpl"))
register_rule(DetectionRule(
    name="controls", suffix="Norm", title="healthy controls",
    reference_name="healthy-control normative model", score=score_normative,
    methods=_BOILERPLATE / "rule_controls.md.tmpl", prepare=prepare_normative,
    needs=("a normative model built by group --build-normative",)))
register_rule(DetectionRule(
    name="asymmetry", suffix="Asym", title="hemispheric asymmetry",
    reference_name="healthy controls' hemispheric asymmetry", score=score_asymmetry,
    methods=_BOILERPLATE / "rule_asymmetry.md.tmpl", prepare=prepare_asymmetry,
    needs=("a normative model built by group --build-normative",)))
register_rule(DetectionRule(
    name="spread", suffix="Spread", title="own grey matter and sample spread",
    reference_name="subject's own grey matter, widened by the sample spread",
    score=score_spread, methods=_BOILERPLATE / "rule_spread.md.tmpl",
    needs=("a stochastic model (SynDiff) with --n-samples 2 or more",), needs_samples=True))
