"""Readable references from the BibTeX bibliography, and the methods text that uses them."""

from __future__ import annotations

import re

import pytest

from pseudopet_bids.config import RunConfig
from pseudopet_bids.reports import bibliography as B
from pseudopet_bids.reports import citation as cit


def test_latex_to_text():
    assert B.latex_to_text(r'{\"O}zbey, {\c{S}}aban, Capot{\u{a}}, Ga{\"e}l') == \
        "Özbey, Şaban, Capotă, Gaël"
    assert B.latex_to_text("{PET}-{CT}  image\n  pages 1--2 \\& more") == \
        "PET-CT image pages 1–2 & more"


def test_entry_fields_and_authors():
    kind, key, fields = B.entry_fields(
        '@article{k1,\n  author = {van der Walt, St{\\\'e}fan and Jun-Yan Zhu and '
        '{Brain Development Cooperative Group} and others},\n  title = "A {B} c",\n'
        "  year = 2001,\n  pages = {1--2}\n}")
    assert (kind, key, fields["year"], fields["title"]) == ("article", "k1", "2001", "A {B} c")
    authors = B.parse_authors(fields["author"])
    assert authors == (("van der Walt", "Stéfan"), ("Zhu", "Jun-Yan"),
                       ("Brain Development Cooperative Group", ""), ("others", ""))
    assert B.initials("Jun-Yan") == "J.-Y." and B.initials("C. Robert") == "C. R."


def _ref(authors: str, year: str | None = "2000", title: str = "T") -> B.Reference:
    year_field = f", year = {{{year}}}" if year else ""
    return B.parse_reference(f"@article{{k{abs(hash((authors, title)))}, author = {{{authors}}}, "
                             f"title = {{{title}}}{year_field}}}")


def test_cite_labels():
    assert B.cite_label(_ref("Wilson, Edwin B.")) == "Wilson, 2000"
    assert B.cite_label(_ref("Crawford, J. and Howell, D.")) == "Crawford & Howell, 2000"
    assert B.cite_label(_ref("Brett, M. and others")) == "Brett et al., 2000"
    assert B.cite_label(_ref("A, B and C, D and E, F")) == "A et al., 2000"
    assert B.cite_label(_ref("{Nilearn contributors}", None)) == "Nilearn contributors, n.d."
    one, two = _ref("Fonov, V. and X, Y and Z, W", title="b"), _ref("Fonov, V. and Q, R",
                                                                    title="a")
    two = B.parse_reference(f"@article{{{two.key}, author = {{Fonov, V. and Q, R and S, T}}, "
                            "title = {a}, year = {2000}}")
    labels = B.cite_labels([one, two])
    assert labels[two.key] == "Fonov et al., 2000a" and labels[one.key] == "Fonov et al., 2000b"


def test_every_bib_entry_formats():
    for key, entry in cit.bib_entries().items():
        ref = B.parse_reference(entry)
        text = B.format_reference(ref)
        assert not re.search(r"[{}\\]", text), (key, text)
        assert ref.year in text and ref.fields["title"].split()[0] in text
        if "doi" in ref.fields:
            assert text.endswith("doi:" + ref.fields["doi"])
    wilson = B.format_reference(B.parse_reference(cit.bib_entries()["wilson1927"]))
    assert wilson == ("Wilson, E. B. (1927). Probable Inference, the Law of Succession, and "
                      "Statistical Inference. Journal of the American Statistical Association, "
                      "22(158), 209–212. doi:10.1080/01621459.1927.10502953")


@pytest.fixture(scope="module")
def methods() -> tuple[str, str]:
    cfg = RunConfig.from_flat(dict(bids_dir="/in", output_dir="/out",
                                   analysis_level="participant"))
    markdown = cit.methods_markdown(cfg, None, {})
    return markdown, cit.methods_html(markdown)


def test_methods_html_resolves_every_citation(methods):
    markdown, page = methods
    keys = cit.cited_keys(markdown)
    assert "## References" in markdown and len(keys) > 10
    for key in keys:
        assert key not in page, key  # no raw citation key left
    assert "(Gorgolewski et al., 2017)" in page and "(Wilson, 1927)" in page
    # the References heading is followed by one entry per cited work, not left empty
    tail = page.split("<h4>References</h4>", 1)[1]
    assert tail.lstrip().startswith('<ul class="references">')
    assert tail.count("<li>") == len(keys)
    assert "doi:10.1371/journal.pcbi.1005209" in tail  # text, not a link
    assert "http" not in page


def test_methods_html_unknown_key_and_no_heading():
    page = cit.methods_html("Text [@wilson1927; @nosuchkey2099].")
    assert "(Wilson, 1927; nosuchkey2099)" in page
    assert page.count("<h4>References</h4>") == 1 and page.count("<li>") == 1
    assert "<h4>References</h4>" not in cit.methods_html("No citation here.")
