"""The "Mechanism" view: what a learned family did inside, from :mod:`regcore.mechanism`.

Shown only for runs whose result carries a mechanism: a trajectory (slider from t = 0 to 1), an RL episode
(slider over the agent's steps with action, reward and score), a per-pair optimiser's loss per iteration, and
the family's named maps (a discriminator's score, a learned similarity, representations).
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from pages import _tables as tables
from pages._views import ViewContext, view
from regcore import mechanism, viz


def _has_mechanism(record) -> bool:
    return mechanism.has_mechanism(record.result.extras)


def _trajectory(ctx: ViewContext, axis, index) -> None:
    n = mechanism.trajectory_length(ctx.record.result)
    if not n:
        return
    st.markdown(
        "**Trajectory**: the moving image carried along the deformation path, t = 0 (start) to 1 (result)."
    )
    k = st.slider("Step along the path", 0, n - 1, n - 1, key=f"{ctx.key}_traj")
    t = k / max(n - 1, 1)
    c1, c2 = st.columns(2)
    window = viz.auto_window(ctx.view.fixed)
    level, width = window
    ctx.chart(
        viz.image_figure(
            mechanism.trajectory_frame(ctx.record.result, k, axis, index),  # one warp per slider move
            title=f"Moving at t = {t:.2f}",
            level=level,
            width=width,
            flips=ctx.flips,
            height=ctx.height,
        ),
        "traj_frame",
        c1,
    )
    ctx.chart(
        viz.image_figure(
            ctx.view.fixed, title="Fixed", level=level, width=width, flips=ctx.flips, height=ctx.height
        ),
        "traj_fixed",
        c2,
    )


def _episode(ctx: ViewContext, axis, index) -> None:
    steps = mechanism.episode_steps(ctx.record.result, axis, index, frames=False)
    if not steps:
        return
    st.markdown("**Episode**: the agent's actions one by one; the reward says how much each step helped.")
    k = st.slider("Step", 1, len(steps), len(steps), key=f"{ctx.key}_episode") - 1
    s = steps[k]
    st.caption(
        f"Step {s.step}: action **{s.action}**, reward {viz.format_number(s.reward)}, "
        f"score after it {viz.format_number(s.score)}."
    )
    level, width = viz.auto_window(ctx.view.fixed)
    c1, c2 = st.columns(2)
    ctx.chart(
        viz.image_figure(
            mechanism.episode_frame(ctx.record.result, k, axis, index),  # one warp per slider move
            title=f"Moving after step {s.step}",
            level=level,
            width=width,
            flips=ctx.flips,
            height=ctx.height,
        ),
        "ep_frame",
        c1,
    )
    ctx.chart(
        viz.line_figure(
            [x.step for x in steps],
            {"score": [x.score for x in steps], "reward": [x.reward for x in steps]},
            title="Score and reward per step",
            x_title="step",
            height=ctx.height,
            markers=True,
        ),
        "ep_chart",
        c2,
    )
    table = pd.DataFrame(
        [{"Step": x.step, "Action": x.action, "Reward": x.reward, "Score": x.score} for x in steps]
    )
    tables.show(table, hide_index=True, width="stretch")


def _loss(ctx: ViewContext) -> None:
    history = mechanism.loss_history(ctx.record.result)
    if history:
        st.markdown("**Convergence**: the loss this pair was optimised on, per iteration.")
        ctx.chart(
            viz.line_figure(
                range(1, len(history) + 1),
                {"loss": history},
                title="Loss per iteration",
                x_title="iteration",
                height=300,
            ),
            "loss",
        )


def _maps(ctx: ViewContext, axis, index) -> None:
    maps = mechanism.mechanism_maps(ctx.record.result, axis, index)
    if not maps:
        return
    st.markdown("**Maps** the family computed (on the fixed grid).")
    cols = st.columns(min(len(maps), 3))
    for k, (name, a) in enumerate(maps.items()):
        col = cols[k % len(cols)]
        col.caption(name.replace("_", " "))  # long names wrap here; a plot title would be cut
        ctx.chart(
            viz.image_figure(
                a,
                colorscale="viridis",
                showscale=True,
                flips=ctx.flips,
                height=ctx.height,
            ),
            f"map_{k}",
            cols[k % len(cols)],
        )


@view(
    "Mechanism",
    "what the learned family did inside: its path, episode, convergence or maps",
    when=_has_mechanism,
)
def _mechanism(ctx: ViewContext) -> None:
    axis, index = ctx.view.axis, ctx.view.index
    _trajectory(ctx, axis, index)
    _episode(ctx, axis, index)
    _loss(ctx)
    _maps(ctx, axis, index)
