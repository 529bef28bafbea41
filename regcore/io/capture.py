"""Capture what the image libraries print (SimpleITK/ITK/GDCM/MetaIO, nibabel, Python warnings) while a
file is read, so the user sees ONE clear line from regcore with the library noise summarised under it.

* ITK writes warnings through its global output window; SimpleITK lets a Python ``LoggerBase`` take
  that role. One logger is installed per process, once SimpleITK is loaded: by :func:`simpleitk`, the
  import for readers, or by the first capture after anything else imported it (a capture never imports
  SimpleITK itself: ~0.13 s that a NIfTI read does not need). It hands each message to the capture open
  in the calling thread, or to the ``regcore.io.library`` logging channel when none is open.
* Some C++ code (MetaIO, GDCM, teem/NRRD) and nibabel's header checks write to stderr directly: file
  descriptor 2 is pointed at a temporary file for the duration (one thread at a time).
* Python warnings are recorded as they are issued.

    with library_output() as notes:
        image = reader.Execute()
    notes.summary()   # "" or "[2 library warnings hidden; first: No Series were found]"
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

LOG = logging.getLogger("regcore.io.library")
_LOCAL = threading.local()
_INSTALL_LOCK = threading.Lock()
_FD_LOCK = threading.RLock()
_LOGGER = None
MAX_KEPT = 50
"""Messages kept per capture (the rest are only counted)."""


class Notes:
    """Library messages met inside one :func:`library_output` block (counted; the first few kept)."""

    def __init__(self) -> None:
        self.count = 0
        self.messages: list[str] = []

    def add(self, text: str) -> None:
        self.count += 1
        if len(self.messages) < MAX_KEPT:
            self.messages.append(text)

    def first(self) -> str:
        """The telling line of the first message (ITK prefixes "WARNING: In <file>, line N")."""
        for msg in self.messages:
            lines = [ln.strip() for ln in str(msg).splitlines() if ln.strip()]
            lines = [ln for ln in lines if not ln.startswith(("WARNING: In ", "ERROR: In "))] or lines
            if lines:
                text = lines[0]
                if "): " in text and text.split("(", 1)[0].strip().isidentifier():
                    text = text.split("): ", 1)[1]  # "GDCMSeriesFileNames (0x55..): No Series" -> "No Series"
                return text[:160]
        return ""

    def summary(self) -> str:
        """``""`` or ``"[N library warning(s) hidden; first: ...]"`` to put under an error message."""
        if not self.count:
            return ""
        s = "s" if self.count != 1 else ""
        first = self.first()
        return f"[{self.count} library warning{s} hidden" + (f"; first: {first}]" if first else "]")


def _stack() -> list[Notes]:
    stack = getattr(_LOCAL, "stack", None)
    if stack is None:
        stack = _LOCAL.stack = []
    return stack


def _route(text: str) -> None:
    stack = _stack()
    if stack:
        stack[-1].add(text)
    else:
        LOG.info("%s", str(text).strip())


def simpleitk():
    """The SimpleITK module, with ITK's output window routed into the captures (import it this way in
    code that reads files inside :func:`library_output`)."""
    import SimpleITK

    _install()
    return SimpleITK


def _install() -> None:
    """Make a Python logger SimpleITK's global ITK output window (once per process; nothing to do while
    SimpleITK is not loaded: then ITK has printed nothing)."""
    global _LOGGER
    if _LOGGER is not None:
        return
    logger_base = getattr(sys.modules.get("SimpleITK"), "LoggerBase", None)
    if logger_base is None:  # not loaded, or still being imported by another thread
        return
    with _INSTALL_LOCK:
        if _LOGGER is not None:
            return

        class _RoutingLogger(logger_base):  # type: ignore[misc,valid-type]
            def DisplayText(self, t):  # SimpleITK's method names
                _route(t)

            def DisplayErrorText(self, t):
                _route(t)

            def DisplayWarningText(self, t):
                _route(t)

            def DisplayGenericOutputText(self, t):
                _route(t)

            def DisplayDebugText(self, t):
                _route(t)

        logger = _RoutingLogger()
        logger.SetAsGlobalITKLogger()
        _LOGGER = logger


@contextmanager
def _stderr_to(notes: Notes) -> Iterator[None]:
    """Route file descriptor 2 (C++ ``std::cerr``: MetaIO, GDCM, NRRD print there directly) into ``notes``.

    Process-wide by nature, so one thread at a time holds it (:data:`_FD_LOCK`); nested blocks in the
    same thread reuse the outer redirection. Output other threads write meanwhile lands in these notes.
    """
    depth = getattr(_LOCAL, "fd_depth", 0)
    if depth:
        _LOCAL.fd_depth = depth + 1
        try:
            yield
        finally:
            _LOCAL.fd_depth -= 1
        return
    with _FD_LOCK:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):  # no usable fd 2 (embedded interpreters)
            yield
            return
        _LOCAL.fd_depth = 1
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                _LOCAL.fd_depth = 0
                sink.seek(0)
                text = sink.read(1 << 20).decode("utf-8", "replace")
                for block in _blocks(text):
                    notes.add(block)
                    LOG.debug("%s", block)


def _blocks(text: str) -> list[str]:
    """Captured stderr split into messages (an ITK-style "WARNING: In ..." starts a new one)."""
    out: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if out and line.startswith((" ", "\t")):
            out[-1] += "\n" + line
        else:
            out.append(line)
    return out


@contextmanager
def library_output() -> Iterator[Notes]:
    """Collect what the image libraries report inside the block: ITK's output window (this thread),
    anything written to file descriptor 2 (nibabel's header-check log, MetaIO, GDCM) and Python warnings. Warnings are
    added to the notes as they happen, so an error raised inside can summarise them."""
    _install()
    notes = Notes()
    stack = _stack()
    stack.append(notes)
    try:
        with _stderr_to(notes), warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = lambda message, category, *_a, **_k: notes.add(
                f"{category.__name__}: {message}"
            )
            yield notes
    finally:
        stack.remove(notes)
