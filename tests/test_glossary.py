"""The glossary: every metric column of the comparison table explains itself; the page finds terms."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from regcore import viz
from regcore.glossary import GLOSSARY, help_for_column

ROOT = Path(__file__).resolve().parents[1]


def test_every_summary_metric_column_has_plain_words_help():
    pytest.importorskip("streamlit")
    from pages._tables import DICE_ALL, DICE_IN_BOTH, SUMMARY_KEYS

    titles = [viz.metric_title(k) for k in SUMMARY_KEYS if k != "device"] + [DICE_IN_BOTH, DICE_ALL]
    for title in titles:
        assert help_for_column(title), f"no glossary help for column {title!r}"
    assert help_for_column("Mean TRE (mm)") == GLOSSARY["tre"].text()
    assert help_for_column("Run") is None and help_for_column("Pair") is None


def test_terms_say_what_a_good_value_is_for_every_measure():
    for key in ("dice", "hd95", "tre", "folding", "sdlogj", "det_j", "ncc"):
        term = GLOSSARY[key]
        assert term.good and term.good in term.text() and len(term.meaning) > 40


def test_the_glossary_page_filters_terms():
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    old = os.getcwd()
    os.chdir(ROOT)
    try:
        at = AppTest.from_file(str(ROOT / "pages" / "glossary.py"), default_timeout=60).run()
        assert not at.exception
        everything = len(at.markdown)
        at.text_input(key="glossary_query").set_value("landmark").run()
        shown = [m.value for m in at.markdown if m.value.startswith("**")]
        assert shown and all("landmark" in m.lower() for m in shown) and len(at.markdown) < everything
        at.text_input(key="glossary_query").set_value("zzzz").run()
        assert any("No term matches" in i.value for i in at.info)
    finally:
        os.chdir(old)


def test_what_auto_chooses_between_is_explained():
    """The Register page's note names the similarity "auto" takes (LNCC or MIND): both have plain-words entries."""
    from regcore.losses import Similarity
    from regcore.methods.classical.contrast import MIND_BELOW, SAME_CONTRAST_SIMILARITY, similarity_for

    for chosen in (similarity_for(MIND_BELOW), similarity_for(MIND_BELOW - 0.5)):
        assert str(chosen) in GLOSSARY and len(GLOSSARY[str(chosen)].meaning) > 80
    assert SAME_CONTRAST_SIMILARITY == Similarity.LNCC and str(MIND_BELOW) in GLOSSARY["mind"].meaning
