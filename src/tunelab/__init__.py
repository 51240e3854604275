"""TuneLab: train transformer models with the Hugging Face stack."""

__version__ = "0.1.0"
