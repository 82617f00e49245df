"""Plain-PyTorch implementations of every bigkern op: the "torch" backend and the oracle of the tests."""
