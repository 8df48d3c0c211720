"""The networks and their math: layers, Generator/Discriminator, DiffAugment, losses (official `models.py`,
`diffaug.py`, `train.py` of FastGAN). Imports nothing of the package outside `nn`."""
