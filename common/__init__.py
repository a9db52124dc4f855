"""Framework-neutral pieces shared by the PyTorch and JAX implementations.

Nothing in this package imports torch or jax: the data loader, the hyperparameter config,
the checkpoint format, the CLI and the training loop all work on NumPy arrays.
"""
