"""Incremental learners: the contract, the PyTorch learner and its model zoo."""
