"""A rank of a small MLX training, for tests/test_distributed.py to start under mlx.launch:

    mlx.launch --hosts 127.0.0.1 -n 2 --backend ring -- \
        python tests/mlx_ranks.py CORPUS RUNS ID MICRO [STEPS]

The micro model (tests/conftest.py's MICRO), float32, STEPS steps (4) at batch 4 with evals
every 2. Without mlx.launch it trains as one process, the same way."""

import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import MICRO  # noqa: E402
from lal_core.backends import distributed  # noqa: E402
from lal_core.cli.console import StopOnSignals  # noqa: E402
from lal_core.model.recipe import TrainConfig  # noqa: E402
from lal_core.runs.events import StopRequest  # noqa: E402
from lal_core.training.request import RunRequest
from lal_core.training.train import Trainer  # noqa: E402

corpus, runs, run_id, micro = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
steps = int(sys.argv[5]) if len(sys.argv) > 5 else 4
cfg = TrainConfig(max_iters=steps, eval_interval=2, batch_size=4, micro_batch=micro, lr=3e-3)
cfg = replace(cfg, eval_samples=1, eval_sample_tokens=8)
ranks, stop = distributed.join(None), StopRequest()
trainer = Trainer(
    RunRequest(MICRO, cfg, backend="mlx", data=corpus, runs_dir=runs),
    run_id=run_id,
    ranks=ranks,
    stop=stop,
)
with StopOnSignals(stop):  # as `lal train`: Ctrl-C and SIGTERM ask the ranks to stop
    print(trainer.run_training().status)
