"""Spatial transforms: grids, warping, affine, dense, SVF, B-spline, composition, Jacobians."""
