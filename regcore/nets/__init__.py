"""Networks for learned registration: U-Net (VoxelMorph), Swin encoder (TransMorph), affine head.

:class:`~regcore.nets.registration_net.RegistrationNet` wraps any of them and returns
displacements in regcore's convention (voxels, fixed -> moving).
"""
