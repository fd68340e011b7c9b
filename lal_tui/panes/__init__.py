"""The dashboard's five panes: Setup, Train, Sample, SFT and Runs (what draws).

Each pane keeps its own state, posts its requests upward as messages nested in it
(`SamplePane.GenerateRequested`, ...) for the app to act on, and handles the messages the jobs
started for it post (`lal_tui.work.messages`): tokens, a run's events, a count, its errors.

Imports: the engine's API for what a pane reads and checks itself (run folders, configs), the
settings (read only), the widgets and screens, and from `lal_tui.work` only its messages and
the requests' types (`work.tasks.SampleRequest`). A pane never starts work or launches a
process itself: it asks the app.
"""
