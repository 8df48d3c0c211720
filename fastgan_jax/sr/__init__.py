"""Super-resolution through a trained generator (PULSE, Menon et al., CVPR 2020): the degradation it inverts
(`downsample`), the latent search (`pulse`) and its files in and out (`files`)."""
