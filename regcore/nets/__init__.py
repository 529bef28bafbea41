"""Networks for learned registration: U-Net (VoxelMorph), Swin encoder (TransMorph), affine head,
and the input preparation training and inference share. Families (regcore.methods.learned) build them."""
