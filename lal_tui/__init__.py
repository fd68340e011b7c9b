"""lal_tui: the Textual dashboard (`uv run lal-tui`) that drives lal_core from one terminal.

- `app`: `LalApp`, the one App (and `main`, the `lal-tui` command): starts the work, keeps
  what reaches past one pane.
- `settings`: what it trains with, from its flags.
- `commands`: its entries in the command palette.
- `panes/`, `widgets/`, `screens/`: what draws.
- `work/`: what runs work: jobs, launching runs, following them, the engine tasks, and the
  messages they post.
"""
