"""The dashboard's five panes: Setup, Train, Sample, SFT and Runs."""
