"""Reports: Markdown tables with the paper's values beside ours, claim checks, figures, CSV/JSON."""
from .tables import write_report

__all__ = ["write_report"]
