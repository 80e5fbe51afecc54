"""lstmgen: LSTM language models for the novels on your disk."""

__version__ = "0.1.0"
