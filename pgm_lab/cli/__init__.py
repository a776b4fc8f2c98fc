"""The ``pgm-lab`` command line. Each module here other than ``main`` is one subcommand."""
