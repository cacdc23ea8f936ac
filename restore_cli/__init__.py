"""restore: command-line image restoration (USRNet, SFM, SFT-GAN, RL-Restore)."""

__version__ = "0.1.0"
