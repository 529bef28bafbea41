"""Glossary: every measure and symbol the app shows, in plain words (from :mod:`regcore.glossary`)."""

from __future__ import annotations

import streamlit as st

from pages import _state as state
from regcore.glossary import GLOSSARY


def body() -> None:
    st.title("Glossary")
    st.markdown(
        '<p class="rl-lead">What the numbers and pictures mean, in plain words. The same text appears on the '
        "help icon of every metric column.</p>",
        unsafe_allow_html=True,
    )
    query = st.text_input("Find a term", key="glossary_query", placeholder="e.g. Dice, TRE, folding")
    shown = [
        t for t in GLOSSARY.values() if not query or query.lower() in (t.title + " " + t.meaning).lower()
    ]
    if not shown:
        st.info(f"No term matches {query!r}.")
    for term in shown:
        st.markdown(f"**{term.title}**: {term.meaning}" + (f"  \n*Good:* {term.good}" if term.good else ""))


state.run_page(body, "glossary")
