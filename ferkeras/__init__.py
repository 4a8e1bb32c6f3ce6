"""ferkeras: facial expression recognition that stays accurate under noisy, long-tailed labels."""

__version__ = "0.1.0"
