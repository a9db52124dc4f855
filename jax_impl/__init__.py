"""JAX/Flax implementation: RNN / GRU / LSTM classifiers with PyTorch's equations, names and
parameter layout, and their trainer (`python -m jax_impl.train`)."""
