"""The sidebar's "Session" panel: save this session under a name, reopen a saved one (``_session_store``)."""

from __future__ import annotations

import streamlit as st

from pages import _session_store as session_store


def draw(sample_pair) -> None:
    """Draw the panel in the sidebar; ``sample_pair(dataset, dims, contrast)`` rebuilds sample pairs."""
    if session_store.root() is None:
        return
    with st.sidebar.expander("Session", icon=":material/save:"):
        st.caption(
            "Your pair and runs are kept on this server: reloading this page, or opening its address "
            "later, brings them back. Save under a name to reopen them from any browser."
        )
        name = st.text_input("Save as", placeholder="e.g. lecture 3 demo", key="session_name")
        if st.button("Save session", icon=":material/save:", key="session_save"):
            try:
                session_store.save_named(name)
                st.success(f"Saved the session as {name.strip()!r}", icon=":material/check_circle:")
            except ValueError as exc:
                st.error(str(exc), icon=":material/error:")
        saved = session_store.saved_names()
        if not saved:
            return
        choice = st.selectbox("Saved sessions", saved, key="session_open_name")
        if st.button("Open session", icon=":material/folder_open:", key="session_open"):
            try:
                n = session_store.open_named(choice, sample_pair)
            except ValueError as exc:
                st.error(str(exc), icon=":material/error:")
                return
            # in the panel, not a toast: it stays until the next click, so it cannot be missed
            st.success(f"Opened {choice!r}: {n} run{'s' if n != 1 else ''}", icon=":material/folder_open:")
