"""spikeforge: fast, reproducible training of spiking neural networks."""

__version__ = "0.1.0"
__all__ = ["__version__"]
