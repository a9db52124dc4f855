"""PyTorch implementation: nn.RNN / nn.GRU / nn.LSTM classifiers and their trainer."""
