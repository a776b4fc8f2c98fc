"""pgm_lab: graphical models and deep generative models as Pyro programs."""

__version__ = "0.1.0"
