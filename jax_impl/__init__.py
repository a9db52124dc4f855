"""The JAX side in Flax NNX: `nn` (RNN / GRU / LSTM modules with torch.nn's constructor, call and
parameter names, the classifier, the bridge to torch's state_dict), `model` (the pure cell
equations and `jax.lax.scan` time loop they call), and the trainer (`python -m jax_impl.train`)."""
