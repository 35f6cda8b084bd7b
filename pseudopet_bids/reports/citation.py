"""Citation boilerplate: a methods text written from a run's actual configuration.

``OUTPUT_DIR/logs/CITATION.md`` describes what pseudopet did (preprocessing, the pseudo-normal
PET model with the facts of its model card, the detection rule and the group statistics) with
pandoc-style ``[@key]`` citations; ``OUTPUT_DIR/logs/CITATION.bib`` holds exactly the BibTeX
entries that the text cites. The prose lives in ``boilerplate/*.md.tmpl`` (``string.Template``
``${placeholders}``): ``CITATION.md.tmpl`` is the whole text, ``model_<model>.md.tmpl`` one
synthesis paragraph per model type, and ``fragments.md.tmpl`` the sentences that depend on one
setting (``[[name]]`` sections). ``boilerplate/references.bib`` is the bibliography.
"""

from __future__ import annotations

import html
import math
import platform
import re
from pathlib import Path
from string import Template
from typing import Any, Iterable

from pseudopet_bids import __version__, resources
from pseudopet_bids.bids.derivatives import labelled_outputs, model_cards
from pseudopet_bids.config import RunConfig
from pseudopet_bids.detect.rules import get_rule, parse_analysis_label, rule_names, rule_order
from pseudopet_bids.io.files import atomic_write_text
from pseudopet_bids.models.presets import GRIDS, preset
from pseudopet_bids.models.registry import TISSUE, model_names, model_spec
from pseudopet_bids.provenance import PACKAGES, software_versions
from pseudopet_bids.reports.bibliography import (Reference, cite_labels, format_reference,
                                                 parse_reference, sort_key)

_CONNECTIVITY = {6: "a face", 18: "a face or an edge", 26: "a face, an edge or a corner"}
_FRAGMENT = re.compile(r"^\[\[([\w.-]+)\]\][ \t]*$", re.MULTILINE)
_CITATION = re.compile(r"\[([^\[\]]*@[^\[\]]*)\]")  # a [...] group holding an @
_KEY = re.compile(r"(?<![^\s;-])@([A-Za-z0-9_][\w:.#$%&+?<>~/-]*\w)")  # not an e-mail
_BIB_ENTRY = re.compile(r"^@(\w+)\s*\{\s*([^,\s]+)\s*,", re.MULTILINE)


def boilerplate_dir() -> Path:
    """The citation templates and bibliography: ``pseudopet_bids/data/boilerplate`` (installed
    with the package; the repository's top-level ``boilerplate/`` links to it)."""
    path = Path(__file__).resolve().parents[1] / "data" / "boilerplate"
    if not path.is_dir():
        raise FileNotFoundError(f"citation boilerplate folder not found: {path} (it ships as "
                                "package data of pseudopet_bids; reinstall the package)")
    return path


# --------------------------------------------------------------------------- templates


def _read(name: str) -> str:
    return (boilerplate_dir() / name).read_text(encoding="utf-8")


def _fragments() -> dict[str, str]:
    """``[[name]]`` sections of ``fragments.md.tmpl`` (text before the first one ignored)."""
    parts = _FRAGMENT.split(_read("fragments.md.tmpl"))
    return {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}


def _fill(text: str, values: dict[str, Any]) -> str:
    """Substitute ``${name}`` (KeyError naming a missing value) and unwrap lines to one."""
    return " ".join(Template(text).substitute(values).split())


def _pick(fragments: dict[str, str], option: str, value: Any) -> str:
    name = f"{option}.{value}"
    if name not in fragments:
        known = sorted(k.split(".", 1)[1] for k in fragments if k.startswith(option + "."))
        raise ValueError(f"no methods text for {option} = {value!r} (known: {', '.join(known)})")
    return fragments[name]


def one_sided_p(z: float) -> str:
    """One-sided normal tail probability of ``Z < -z``, rounded for the text (1.65 -> 0.05)."""
    p = 0.5 * math.erfc(z / math.sqrt(2.0))
    short = float(f"{p:.1g}")
    return f"{short:g}" if abs(short - p) <= 0.02 * p else f"{p:.2g}"


def _model_values(card: dict, cfg: RunConfig, base: dict[str, Any], fragments: dict[str, str]
                  ) -> dict[str, Any]:
    """Placeholders of a model paragraph, from the model card (preset defaults where absent)."""
    model, name = str(card["model"]), str(card.get("preset", "unknown"))
    try:
        defaults = preset(model, name)
    except ValueError:
        defaults = {}
    hp = {**defaults, **card.get("hparams", {})}
    grid = hp.get("grid", GRIDS.get(name))
    if isinstance(grid, dict):
        voxel, shape = grid.get("voxel_mm"), grid.get("shape")
    else:
        voxel, shape = getattr(grid, "voxel_mm", None), getattr(grid, "shape", None)
    grid_text = (f"{float(voxel):g} mm ({' × '.join(str(int(s)) for s in shape)} voxels)"
                 if voxel and shape else "template-aligned")
    subjects = card.get("training_subjects")
    held_out = "the held-out controls"
    if isinstance(subjects, dict):
        n_mri, n_pet = len(subjects.get("mri", [])), len(subjects.get("pet", []))
        n_val = len(subjects.get("validation", []))
        held_out = _count(n_val, "held-out control") if n_val else held_out
        training = (f"the T1w images of {_count(n_mri, 'healthy control')} and the FDG PET "
                    f"images of {n_pet} of them, sampled independently (unpaired)")
    elif isinstance(subjects, (list, tuple)):
        training = f"the T1w and FDG PET images of {len(subjects)} healthy controls"
    else:
        training = "healthy controls (their number is not recorded in the model card)"
    software = card.get("software") or {}
    trained_with = ""
    if software.get("pseudopet") or software.get("torch"):
        trained_with = (f" (pseudopet {software.get('pseudopet', 'unknown')}, PyTorch "
                        f"{software.get('torch', 'unknown')}"
                        + (f", on {card['device']}" if card.get("device") else "") + ")")
    k = int(card.get("context_slices", 0) or 0)
    slices = ("axial slices one at a time" if k == 0 else
              f"axial slices given with {k} neighbouring slice(s) on each side as extra "
              "input channels (2.5D)")
    values = {**base, **{key: _fmt(val) for key, val in hp.items() if key != "grid"}}
    values.update(model_name=card.get("name") or model, preset=name, grid=grid_text,
                  training=training, trained_with=trained_with, slices=slices,
                  steps=card.get("steps_done", "an unrecorded number of"),
                  sha256=str(card.get("weights_sha256", "unknown"))[:16], held_out=held_out)
    metrics = card.get("validation") or {}
    values["validation"] = (_fill(fragments["validation"], {
        **values, **{m: f"{float(metrics[m]):.3g}" for m in ("ssim", "psnr", "mae")}})
        if all(m in metrics for m in ("ssim", "psnr", "mae")) else "")
    many = int(cfg.synthesis.n_samples) > 1
    values["samples"] = _fill(fragments["samples.many" if many else "samples.one"], values)
    values["calibration"] = _fill(_pick(fragments, "calibration", cfg.synthesis.calibration),
                                  values)
    values["source_sentence"] = _fill(_pick(fragments, "source", hp.get("source", "real")),
                                      values)
    return values


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _fmt(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(_fmt(v) for v in value) + ")"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _synthesis(card: dict | None, cfg: RunConfig, base: dict[str, Any],
               fragments: dict[str, str]) -> str:
    """The paragraph of one synthesis model: its registry entry's template, filled from its
    model card (None: the non-learned baseline)."""
    if card is None:
        return _fill(model_spec(TISSUE).methods_text(), base)
    model = str(card.get("model"))
    if model not in model_names() or not model_spec(model).trainable:
        raise ValueError(f"no methods text for model {model!r} (model card of "
                         f"{card.get('name', 'an unnamed model')})")
    return _fill(model_spec(model).methods_text(), _model_values(card, cfg, base, fragments))


def _unique(cards: Iterable[dict | None]) -> list[dict | None]:
    seen, out = set(), []
    for card in cards:
        key = None if card is None else (card.get("model"), card.get("weights_sha256"),
                                         card.get("name"))
        if key not in seen:
            seen.add(key)
            out.append(card)
    return out


#: Numbering of the detection rules' paragraphs when several are reported side by side.
_ROMAN = ("i", "ii", "iii", "iv", "v", "vi", "vii", "viii", "ix", "x")


def _render(cfg: RunConfig, cards: list[dict | None], versions: dict[str, str],
            z_references: Iterable[str] | None = None) -> str:
    fragments = _fragments()
    syn, det, pre = cfg.synthesis, cfg.detection, cfg.preproc
    merged = {"pseudopet": __version__, "python": platform.python_version(),
              **{dist: "not recorded" for dist in PACKAGES}, **versions}
    z = float(det.z_threshold)
    base: dict[str, Any] = {"v_" + re.sub(r"\W", "_", k): v for k, v in merged.items()}
    base.update(template=resources.TEMPLATE_NAME, seed=cfg.execution.seed,
                n_samples=syn.n_samples, pet_fwhm=f"{float(syn.pet_fwhm):g}",
                gm_threshold=f"{float(det.gm_threshold):g}",
                z_threshold=f"{z:g}", p_value=one_sided_p(z),
                cluster_min_volume=f"{float(det.cluster_min_volume):g}",
                connectivity=int(det.connectivity))
    sha = str(det.normative_sha256 or "")
    base["normative_sha256"] = (f" The normative model used has the SHA-256 digest {sha[:16]}…."
                                if sha else "")
    if base["connectivity"] not in _CONNECTIVITY:
        raise ValueError(f"no methods text for connectivity = {det.connectivity!r}")
    base["connectivity_text"] = _CONNECTIVITY[base["connectivity"]]
    for option, value in (("skullstrip", pre.skullstrip), ("normalization", syn.normalization),
                          ("search_region", det.search_region)):
        base[option] = _fill(_pick(fragments, option, value), base)
    refs = sorted(dict.fromkeys(z_references or [det.z_reference]), key=rule_order)
    texts = []
    for ref in refs:
        if ref not in rule_names():
            known = ", ".join(rule_names())
            raise ValueError(f"no methods text for z_reference = {ref!r} (known: {known})")
        texts.append(_fill(get_rule(ref).methods_text(), base))
    base["z_reference"] = texts[0] if len(texts) == 1 else \
        " ".join([_fill(fragments["both_z_references"], base)]
                 + [f"({i}) {t}" for i, t in zip(_ROMAN, texts)])
    cards = _unique(cards) or [None]
    paragraphs = [_synthesis(card, cfg, base, fragments) for card in cards]
    if len(cards) > 1:
        paragraphs.insert(0, _fill(fragments["several_models"], base))
    base["synthesis"] = "\n\n".join(paragraphs)
    text = Template(_read("CITATION.md.tmpl")).substitute(base)
    blocks = [b for b in re.split(r"\n\s*\n", text) if b.strip()]
    return "\n\n".join(b.strip() if b.lstrip().startswith("#") else " ".join(b.split())
                       for b in blocks) + "\n"


def methods_markdown(cfg: RunConfig, card: dict | None, versions: dict[str, str]) -> str:
    """The methods text (Markdown, pandoc ``[@key]`` citations) of one run.

    Parameters
    ----------
    cfg
        The run's :class:`~pseudopet_bids.config.RunConfig`.
    card
        Model card of the trained model used (``models/<name>/model.json``), or None for the
        tissue baseline.
    versions
        Package -> version, as from :func:`software_versions` (missing ones read "not recorded").

    Returns
    -------
    str
        Markdown, one line per paragraph.
    """
    return _render(cfg, [card], versions)


# --------------------------------------------------------------------------- bibliography


def cited_keys(markdown: str) -> list[str]:
    """Citation keys of the ``[@a; @b]`` groups of a text, in order of first use."""
    keys: list[str] = []
    for group in _CITATION.findall(markdown):
        for key in _KEY.findall(group):
            if key not in keys:
                keys.append(key)
    return keys


def parse_bib(text: str) -> list[tuple[str, str]]:
    """``(key, entry text)`` of every ``@type{key, ...}`` entry, in file order (duplicates kept).

    Entries are delimited by brace matching from the opening brace; text outside entries
    (``%`` comments) is ignored.
    """
    entries = []
    for match in _BIB_ENTRY.finditer(text):
        depth, start = 0, text.index("{", match.start())
        for pos in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[pos], 0)
            if depth == 0:
                break
        else:
            raise ValueError(f"unbalanced braces in BibTeX entry {match.group(2)!r}")
        entries.append((match.group(2), text[match.start():pos + 1]))
    return entries


def bib_entries() -> dict[str, str]:
    """Key -> entry text of ``boilerplate/references.bib`` (ValueError on a duplicate key)."""
    entries: dict[str, str] = {}
    for key, entry in parse_bib(_read("references.bib")):
        if key in entries:
            raise ValueError(f"duplicate BibTeX key {key!r} in references.bib")
        entries[key] = entry
    return entries


def bibtex(keys: Iterable[str]) -> str:
    """BibTeX text of the entries ``keys`` (in that order); KeyError naming an unknown key."""
    return "".join(entry + "\n\n" for entry in _entries(keys))


def _entries(keys: Iterable[str]) -> list[str]:
    """Entry texts of ``keys`` (first occurrence order); KeyError naming an unknown key."""
    entries, keys = bib_entries(), list(dict.fromkeys(keys))
    missing = [key for key in keys if key not in entries]
    if missing:
        raise KeyError(f"no BibTeX entry for {', '.join(map(repr, missing))} in "
                       f"{boilerplate_dir() / 'references.bib'}")
    return [entries[key] for key in keys]


# --------------------------------------------------------------------------- HTML and files


def references(keys: Iterable[str]) -> list[Reference]:
    """The :class:`~pseudopet_bids.reports.bibliography.Reference` of each key, from
    ``boilerplate/references.bib`` (the source of ``CITATION.bib``); KeyError naming an
    unknown key."""
    return [parse_reference(entry) for entry in _entries(keys)]


def methods_html(markdown: str) -> str:
    """Safe HTML of a methods text, with its references resolved, for embedding in a report.

    Everything is HTML-escaped first; then ``#`` headings, paragraphs, ``**bold**``,
    ``*italic*``, ``code`` and ``[@a; @b]`` citations are converted. Citations read
    author-year (``(Wilson, 1927; Zhu et al., 2017)``) and the cited works are listed, from
    the same bibliography as ``CITATION.bib``, under the text's empty ``References`` heading
    (the place pandoc fills), or under a ``References`` heading added at the end. A key that
    is not in the bibliography is shown as the key.
    """
    keys = cited_keys(markdown)
    known = bib_entries()
    refs = references([key for key in keys if key in known])
    labels = cite_labels(refs)

    def cite(match: re.Match) -> str:
        found = _KEY.findall(match.group(1))
        return ('<span class="citation">('
                + "; ".join(labels.get(key, key) for key in found) + ")</span>")

    out, blocks = [], [" ".join(b.split()) for b in re.split(
        r"\n\s*\n", re.sub(r"<!--.*?-->", "", markdown, flags=re.DOTALL))]
    listed = False
    for i, raw in enumerate(blocks):
        block = html.escape(raw, quote=True)
        if not block:
            continue
        block = _CITATION.sub(cite, block)
        block = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", block)
        block = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"<em>\1</em>", block)
        block = re.sub(r"`([^`]+)`", r"<code>\1</code>", block)
        heading = re.match(r"(#{1,4}) (.*)", block)
        if heading:
            level = min(len(heading.group(1)) + 2, 6)
            out.append(f"<h{level}>{heading.group(2)}</h{level}>")
            rest = [b for b in blocks[i + 1:] if b]
            if heading.group(2).strip().lower() == "references" and (
                    not rest or rest[0].startswith("#")):
                out.append(_reference_list(refs))
                listed = True
        else:
            out.append(f"<p>{block}</p>")
    if refs and not listed:
        out += ["<h4>References</h4>", _reference_list(refs)]
    return "\n".join(out) + "\n"


def _reference_list(refs: list[Reference]) -> str:
    if not refs:
        return '<p class="muted">(no references cited)</p>'
    return ('<ul class="references">' + "".join(
        f"<li>{html.escape(format_reference(ref), quote=True)}</li>"
        for ref in sorted(refs, key=sort_key)) + "</ul>")


def write_citation(output_dir: Path, cfg: RunConfig, cards: list[dict | None],
                   z_references: Iterable[str] | None = None) -> tuple[Path, Path]:
    """Write ``logs/CITATION.md`` and ``logs/CITATION.bib`` of an output folder atomically.

    Parameters
    ----------
    output_dir
        The BIDS-Derivatives output folder.
    cfg
        The run's :class:`~pseudopet_bids.config.RunConfig`.
    cards
        Model cards of every model used in the folder (None, or an empty list: the tissue
        baseline); one synthesis paragraph per distinct model.
    z_references
        The Z references (``subject``, ``controls``) of the analyses in the folder; both give
        their paragraphs. Default: ``cfg.detection.z_reference``.

    Returns
    -------
    tuple of Path
        The Markdown and BibTeX files. Each is written to a temporary file and renamed, so
        concurrent participant jobs leave one complete version, never a torn file.
    """

    text = _render(cfg, list(cards), software_versions(), z_references)
    logs = Path(output_dir) / "logs"
    md_path, bib_path = logs / "CITATION.md", logs / "CITATION.bib"
    bib = bibtex(cited_keys(text))  # before writing: an unknown key leaves no files behind
    atomic_write_text(md_path, text)
    atomic_write_text(bib_path, "% References cited by CITATION.md (pseudopet "
                      f"{__version__})\n\n" + bib)
    return md_path, bib_path


def cards_in_output(output_dir: Path) -> list[dict | None]:
    """Model cards of every model with a pseudo-normal PET in an output folder (None for the
    non-learned baseline), in label order."""
    labels = sorted({label for _, label in labelled_outputs(output_dir, "pseudonormal")})
    cards_by_label = model_cards(output_dir)
    return [None if label == TISSUE else cards_by_label[label]
            for label in labels if label == TISSUE or label in cards_by_label]


def z_references_in_output(output_dir: Path) -> list[str]:
    """The detection rules of the analyses with cluster tables in an output folder."""
    return sorted({parse_analysis_label(label)[1]
                   for _, label in labelled_outputs(output_dir, "clusters")})
