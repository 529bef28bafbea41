"""RegLab dashboard entry point: `streamlit run app.py` (or `make app`).

Thin by design: sets the page config, the style and logo, and the navigation. Each page
lives in pages/ and talks to regcore through pages/_backend.py.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parent
ASSETS = ROOT / "assets"

st.set_page_config(page_title="RegLab", page_icon=str(ASSETS / "logo.svg"), layout="wide",
                   initial_sidebar_state="expanded")

css = ASSETS / "style.css"
if css.exists():
    st.html(f"<style>{css.read_text()}</style>")
if (ASSETS / "logo.svg").exists():
    st.logo(str(ASSETS / "logo.svg"), size="large")

PAGES = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/data.py", title="Data", icon=":material/database:"),
    st.Page("pages/register.py", title="Register", icon=":material/join_inner:"),
    st.Page("pages/evaluate.py", title="Evaluate & compare", icon=":material/compare:"),
]
if (ROOT / "pages" / "train.py").exists():  # owned by the learning team; may not exist yet
    PAGES.append(st.Page("pages/train.py", title="Train", icon=":material/model_training:"))
PAGES.append(st.Page("pages/learn.py", title="Learn", icon=":material/school:"))

st.session_state["_reglab_app_ran"] = True
navigation = st.navigation(PAGES, position="sidebar")
requested = st.session_state.pop("_reglab_requested_page", None)  # set by pages/_state.py, see there
if requested and (ROOT / "pages" / f"{requested}.py").exists():
    st.switch_page(f"pages/{requested}.py")
navigation.run()
