"""One leaderboard in nats: every model family scored on the same binarized test images.

:mod:`~pgm_lab.leaderboard.entries` trains and scores one model per family;
:mod:`~pgm_lab.leaderboard.report` writes ``leaderboard.json``, the table and the figures;
:mod:`~pgm_lab.leaderboard.progress` records each finished entry so a killed run resumes.
"""

from .entries import SCALES, Entry, Scale
from .progress import Progress
from .report import format_table, plot_leaderboard, sample_grid, to_json

__all__ = ["Entry", "Scale", "SCALES", "Progress", "to_json", "format_table",
           "plot_leaderboard", "sample_grid"]
