"""Widgets the panes are built from (loss plot, eval samples, run picker, key footer) and
formatting helpers.

Imports: Textual, the engine's API for what a widget reads (a runs folder) and
`lal_tui.work.messages` at most; never the panes, the app, or the rest of `lal_tui.work`: a
widget starts no work.
"""
