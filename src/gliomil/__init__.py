"""gliomil: dual-stream multiple-instance learning of glioma grade from multi-modal brain MRI."""

__version__ = "0.1.0"
