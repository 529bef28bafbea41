"""SimpleITK iteration events -> regcore progress callbacks, with cancellation."""

from __future__ import annotations

from regcore.methods.base import RegistrationCancelled, report


def attach_progress(obj, progress, history: list, label: str, fraction, metric) -> dict:
    """Forward SimpleITK iteration events of ``obj`` (a registration method or filter) to ``progress``.

    ``fraction(i)`` maps the iteration count to [0, 1]; ``metric()`` reads the current value, which is
    also appended to ``history``. A cancel request stops ``obj`` at the next event; call
    :func:`raise_if_cancelled` on the returned state after ``Execute``.
    """
    import SimpleITK as sitk

    state = {"i": 0, "cancelled": False}

    def on_iter():
        state["i"] += 1
        value = float(metric())
        history.append({"similarity": value})
        try:
            report(progress, min(fraction(state["i"]), 0.99), f"{label} iter {state['i']}", similarity=value)
        except RegistrationCancelled:
            state["cancelled"] = True
            obj.StopRegistration()

    obj.AddCommand(sitk.sitkIterationEvent, on_iter)
    return state


def raise_if_cancelled(state: dict) -> None:
    """RegistrationCancelled when the progress callback asked to stop during ``Execute``."""
    if state["cancelled"]:
        raise RegistrationCancelled("cancelled by the progress callback")
