"""What runs work for the dashboard, off the screen: nothing here draws.

- `jobs`: `JobRunner`, the one way work runs (a thread worker per job group, its messages
  posted to the pane that asked).
- `launching`: starting a run as a process of its own (`ProcessLauncher`; `ThreadLauncher` in
  tests) and asking it to stop.
- `following`: the runs the Train and SFT panes follow (`FollowedRuns`) and the job that
  follows one.
- `tasks`: the other jobs: sampling, answering, counting a corpus, reporting, saving a picture.
- `messages`: what jobs post.
- `signals`: SIGTERM and SIGHUP while the dashboard runs.

Imports: the engine (`lal_core`), Textual's messages and workers, and each other; never the
panes, widgets or screens, nor the app.
"""
