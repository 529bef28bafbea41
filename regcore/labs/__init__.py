"""Computation behind the Learn page's concept labs (pure numpy/torch; never imports streamlit).

* :mod:`~regcore.labs.transforms`: rigid/affine/deformable maps on a grid.
* :mod:`~regcore.labs.landscape`: similarity (MSE/NCC/MI) vs translation/rotation, per resolution.
* :mod:`~regcore.labs.tradeoff`: regularisation weight vs Dice, folding and smoothness.
* :mod:`~regcore.labs.diffeo`: scaling and squaring vs using a velocity as a displacement.
* :mod:`~regcore.labs.fiducials`: FLE, FRE and TRE of rigid point-based registration.
* :mod:`~regcore.labs.phantoms`: small synthetic images used by the labs.
"""
