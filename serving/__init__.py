"""Model registry, prediction API and hot swap."""
