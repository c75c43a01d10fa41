"""blindsr: blind (real-world) image super-resolution."""

__version__ = "0.1.0"
