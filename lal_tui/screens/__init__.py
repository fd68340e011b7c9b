"""Modal screens: confirmation (delete a run, quit while one runs) and help.

Imports: Textual, the widgets and `lal_tui.work.messages` at most; never the panes, the app or
the rest of `lal_tui.work`: a screen asks a question, it starts no work.
"""
