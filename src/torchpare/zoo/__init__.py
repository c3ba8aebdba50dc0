"""Small reference models for tests, the demo and benchmarks (own CNNs/MLPs and HF configs)."""
