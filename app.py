"""RegLab dashboard entry point: `streamlit run app.py` (or `make app`).

Thin by design: sets the page config, the style and logo, and runs the navigation built from
the page registry in pages/_nav.py (a new page = one file in pages/ + one entry there). Each
page talks to regcore through pages/_backend.py.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from pages import _nav as nav
from pages import _upload_replies as upload_replies

upload_replies.keep_upload_url_replies()  # a Streamlit bug loses uploads chosen as a run starts

ASSETS = Path(__file__).resolve().parent / "assets"

st.set_page_config(
    page_title="RegLab", page_icon=str(ASSETS / "logo.svg"), layout="wide", initial_sidebar_state="expanded"
)
st.html(f"<style>{(ASSETS / 'style.css').read_text(encoding='utf-8')}</style>")
st.logo(str(ASSETS / "logo.svg"), size="large")
nav.run_app_navigation()
