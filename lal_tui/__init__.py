"""lal_tui: the Textual dashboard (`uv run lal-tui`) that drives lal_core from one terminal."""
