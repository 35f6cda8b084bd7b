"""Readable references from BibTeX entries: author-year citations and a reference list.

The methods text cites pandoc-style (``[@key]``) and ``boilerplate/references.bib`` is the one
bibliography (``logs/CITATION.bib`` is the part of it that a text cites). Pandoc renders the
Markdown file; the HTML reports render the same text with this module, so a reader of a report
sees "(Gorgolewski et al., 2017)" and the reference list instead of citation keys.

Pure functions of the entry texts (no file access). The style follows the author-date
conventions of APA: up to six authors listed, initials after the family name, the DOI
(``doi:…``, not a URL: the reports link to nothing online).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

#: LaTeX accent commands → the combining character they add.
_ACCENTS = {'"': "\u0308", "'": "\u0301", "`": "\u0300", "^": "\u0302", "~": "\u0303",
            "=": "\u0304", ".": "\u0307", "u": "\u0306", "v": "\u030c", "c": "\u0327",
            "H": "\u030b", "k": "\u0328", "r": "\u030a"}
_ACCENT = re.compile(r"\\([\"'`^~=.]|[uvcHkr](?![A-Za-z]))\s*(?:\{\s*(\\?[A-Za-z])\s*\}|"
                     r"(\\?[A-Za-z]))")
#: Authors listed in full; longer lists end with "et al." (APA shows up to 20; six keeps a
#: report readable).
MAX_AUTHORS = 6


@dataclass(frozen=True)
class Reference:
    """One bibliography entry, as plain text.

    Attributes
    ----------
    key
        The BibTeX key.
    authors
        ``(family name, given names)`` per author (a corporate author has no given names);
        ``("others", "")`` marks a list that the entry itself abbreviates.
    fields
        Every other field, LaTeX converted to text (``title``, ``journal``, ``year`` …).
    """

    key: str
    kind: str
    authors: tuple[tuple[str, str], ...]
    fields: dict[str, str]

    @property
    def year(self) -> str:
        return self.fields.get("year", "n.d.")


def latex_to_text(value: str) -> str:
    """BibTeX field text → plain Unicode: accents (``{\\"O}`` → Ö), ``--`` → en dash, braces
    and line breaks removed."""

    def accent(match: re.Match) -> str:
        letter = (match.group(2) or match.group(3)).lstrip("\\")  # \\i: dotless i
        return unicodedata.normalize("NFC", letter + _ACCENTS[match.group(1)])

    text = _ACCENT.sub(accent, value)
    text = text.replace("\\&", "&").replace("\\%", "%").replace("\\_", "_").replace("~", " ")
    text = text.replace("---", "—").replace("--", "–")
    text = text.replace("{", "").replace("}", "")
    return " ".join(text.split())


def entry_fields(entry: str) -> tuple[str, str, dict[str, str]]:
    """``(type, key, raw fields)`` of one ``@type{key, name = {value}, …}`` entry; values keep
    their LaTeX (braces of ``{…}``/``"…"`` delimiters removed), names are lower case."""
    head = re.match(r"@(\w+)\s*\{\s*([^,\s]+)\s*,", entry)
    if head is None:
        raise ValueError(f"not a BibTeX entry: {entry[:40]!r}")
    fields: dict[str, str] = {}
    pos, text = head.end(), entry
    name_re = re.compile(r"\s*([A-Za-z][\w-]*)\s*=\s*")
    while True:
        match = name_re.match(text, pos)
        if match is None:
            break
        pos = match.end()
        if text[pos] in "{\"":
            close = "}" if text[pos] == "{" else '"'
            depth, start = 0, pos
            for pos in range(start, len(text)):
                char = text[pos]
                if char == "{":
                    depth += 1
                elif char == "}" and close == "}" and depth == 1:
                    break
                elif char == "}":
                    depth -= 1
                elif char == '"' and close == '"' and depth == 0 and pos > start:
                    break
            else:
                raise ValueError(f"unterminated value of {match.group(1)!r} in {head.group(2)}")
            value = text[start + 1:pos]
            pos += 1
        else:
            bare = re.match(r"[^,}\s]+", text[pos:])
            value = bare.group(0) if bare else ""
            pos += len(value)
        fields[match.group(1).lower()] = value
        comma = re.match(r"\s*,", text[pos:])
        if comma is None:
            break
        pos += comma.end()
    return head.group(1).lower(), head.group(2), fields


def _split_top(text: str, sep: str) -> list[str]:
    """Split on ``sep`` (a regex) outside braces."""
    parts, depth, start = [], 0, 0
    for match in re.finditer(r"[{}]|" + sep, text):
        token = match.group(0)
        if token == "{":
            depth += 1
        elif token == "}":
            depth -= 1
        elif depth == 0:
            parts.append(text[start:match.start()])
            start = match.end()
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def parse_authors(value: str) -> tuple[tuple[str, str], ...]:
    """``author`` field → ``(family, given)`` pairs. ``Family, Given`` and ``Given Family``
    forms; a name wholly in braces is corporate (no given names)."""
    out = []
    for name in _split_top(" ".join(value.split()), r"\sand\s"):
        if name.startswith("{") and name.endswith("}") and not _split_top(name[1:-1], ","):
            out.append((latex_to_text(name), ""))
            continue
        parts = _split_top(name, ",")
        if len(parts) >= 2:
            out.append((latex_to_text(parts[0]), latex_to_text(parts[-1])))
        else:
            words = _split_top(name, r"\s")
            out.append((latex_to_text(words[-1]), latex_to_text(" ".join(words[:-1]))))
    return tuple(out)


def parse_reference(entry: str) -> Reference:
    """A :class:`Reference` from one BibTeX entry's text."""
    kind, key, raw = entry_fields(entry)
    authors = parse_authors(raw.pop("author", ""))
    return Reference(key, kind, authors, {k: latex_to_text(v) for k, v in raw.items()})


def initials(given: str) -> str:
    """``"Krzysztof J."`` → ``"K. J."``, ``"Jun-Yan"`` → ``"J.-Y."``."""
    out = []
    for word in given.split():
        pieces = [p for p in word.split("-") if p]
        out.append("-".join(p[0] + "." for p in pieces))
    return " ".join(out)


def _is_others(author: tuple[str, str]) -> bool:
    return author[0].lower() == "others" and not author[1]


def cite_label(ref: Reference) -> str:
    """In-text author-year label: ``Wilson, 1927``, ``Crawford & Howell, 1998``,
    ``Gorgolewski et al., 2017``."""
    names = [a[0] for a in ref.authors if not _is_others(a)]
    if not names:
        who = ref.fields.get("title", ref.key)
    elif len(names) == 1 and len(ref.authors) == 1:
        who = names[0]
    elif len(names) == 2 and len(ref.authors) == 2:
        who = f"{names[0]} & {names[1]}"
    else:
        who = f"{names[0]} et al."
    return f"{who}, {ref.year}"


def _author_list(ref: Reference) -> str:
    named = [a for a in ref.authors if not _is_others(a)]
    shown = [f"{family}, {initials(given)}" if given else family
             for family, given in named[:MAX_AUTHORS]]
    if len(ref.authors) > len(shown):
        return ", ".join(shown) + ", et al."
    if len(shown) > 1:
        return ", ".join(shown[:-1]) + ", & " + shown[-1]
    return shown[0] if shown else ""


def format_reference(ref: Reference) -> str:
    """A reference-list entry as plain text (authors, year, title, venue, volume(issue),
    pages, DOI or URL)."""
    f = ref.fields
    title = f.get("title", "")
    venue = f.get("journal") or f.get("booktitle") or f.get("publisher", "")
    parts = [f"{_author_list(ref) or title} ({ref.year})."]
    if _author_list(ref):
        parts.append(title.rstrip(".") + ".")
    where = venue
    if f.get("volume"):
        where += f", {f['volume']}" + (f"({f['number']})" if f.get("number") else "")
    if f.get("pages"):
        where += f", {f['pages']}"
    if where:
        parts.append(("In " if ref.kind == "inproceedings" else "") + where.lstrip(", ") + ".")
    elif ref.kind == "software":
        parts.append("Software.")
    if f.get("eprint") and f.get("archiveprefix", "").lower() == "arxiv":
        parts.append(f"arXiv:{f['eprint']}.")
    if f.get("doi"):
        parts.append(f"doi:{f['doi']}")  # not a URL: a report references nothing online
    elif f.get("url"):
        parts.append(f["url"])
    return " ".join(p for p in parts if p.strip(". "))


def cite_labels(refs: list[Reference]) -> dict[str, str]:
    """Key → in-text label, with ``a``, ``b`` … after the year where two works would read
    the same (e.g. two papers of one first author in one year)."""
    labels = {ref.key: cite_label(ref) for ref in refs}
    groups: dict[str, list[str]] = {}
    for ref in sorted(refs, key=sort_key):
        groups.setdefault(labels[ref.key], []).append(ref.key)
    for label, keys in groups.items():
        if len(keys) > 1:
            for k, key in enumerate(keys):
                labels[key] = label + "abcdefghijklmnopqrstuvwxyz"[k % 26]
    return labels


def sort_key(ref: Reference) -> tuple[str, str, str]:
    """Reference-list order: first author's family name, year, title (author-date style)."""
    def plain(text: str) -> str:  # "Özbey" next to "Ozbey", "van der Walt" under V
        decomposed = unicodedata.normalize("NFKD", text)
        return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()

    first = ref.authors[0][0] if ref.authors else ref.fields.get("title", ref.key)
    return plain(first), ref.year, plain(ref.fields.get("title", ""))
