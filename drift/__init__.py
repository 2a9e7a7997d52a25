"""Drift detectors and the drift policy (rollback / adapt / retrain)."""
