"""Setup pane: pick a config and a backend, edit the training settings, check the corpus.

The fields are TrainConfig's own (`lal_core.cli.flags.recipe_flags`: label, type and help), plus
the model's dropout. Every edit is checked as it is typed with the engine's own checks
(`TrainConfig.validate`, `ModelConfig.validate`); the first problem shows under the fields.
The pane never writes the settings: it posts what it shows (`SettingsChanged`, with the
problem if there is one, so the app refuses to train) and the app keeps them. The corpus typed
is counted once typing pauses, by a job the app starts for the pane (`CountRequested`:
`lal_tui.work.tasks.counting`), which posts its count here.
"""

from __future__ import annotations

import contextlib
import gc
from dataclasses import dataclass, replace

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Grid, Horizontal, VerticalScroll
from textual.message import Message
from textual.timer import Timer
from textual.widgets import DataTable, Input, Label, Select, Static
from textual.worker import Worker, WorkerState

from lal_core.backends import BACKENDS, BackendInfo, available_backends
from lal_core.cli.flags import RecipeFlag, recipe_flags
from lal_core.errors import LalError
from lal_core.model.config import CONFIG_DROPOUT, count_parameters
from lal_core.model.cost import estimate_training_memory
from lal_core.model.recipe import TrainConfig, default_recipe
from lal_tui.settings import Settings
from lal_tui.widgets.format import human_bytes, params
from lal_tui.work.messages import CorpusCounted, EngineError

# The recipe fields shown (the rest keep their flag or default values): what fits 80x24.
SHOWN = (
    "batch_size",
    "micro_batch",
    "lr",
    "max_iters",
    "eval_interval",
    "patience",
    "dropout",
    "seed",
)
AUTO = "auto"  # the device Select's "let the engine choose"
COUNT_AFTER_SECONDS = 0.4  # count the corpus once typing pauses: a path in full, not a prefix


DROPOUT = RecipeFlag(
    "dropout", "dropout", float, CONFIG_DROPOUT["tiny"], "the model's dropout, in [0, 1)"
)


def setup_fields(shown: tuple[str, ...] = SHOWN) -> list[RecipeFlag]:
    """The fields named in `shown`, labelled and typed as the recipe's flags are."""
    flags = {f.name: f for f in recipe_flags()} | {"dropout": DROPOUT}
    return [flags[name] for name in shown]


def probe_backends() -> list[BackendInfo]:
    """The backends on this machine and their devices (imports torch: run it off the UI)."""
    return available_backends()


class SetupPane(VerticalScroll):
    """Config, backend, training settings and corpus."""

    @dataclass
    class SettingsChanged(Message):
        """What the pane shows now; train_config and dropout are the last valid ones, `error`
        the first problem in the fields (None: all good)."""

        config: str
        dropout: float
        train_config: TrainConfig
        backend: str
        device: str | None
        error: str | None

    @dataclass
    class CorpusChanged(Message):
        """The corpus path as typed (None: the default corpus)."""

        path: str | None

    @dataclass
    class CountRequested(Message):
        """Count the corpus at `path` (as typed): at first, and once typing pauses."""

        path: str | None

    def __init__(self, settings: Settings, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.settings = settings  # what the app started with (frozen: read only)
        self.fields = setup_fields()
        self.train_config = settings.request.train_config
        self.dropout = settings.request.model_config.dropout
        self.shown_config = settings.config  # whose defaults the untouched fields hold
        self.devices: dict[str, tuple[str, ...]] = {}  # per backend, once probed
        self.corpus = settings.request.data  # the path as typed (None: the default corpus)
        self._count_timer: Timer | None = None

    def compose(self) -> ComposeResult:
        request = self.settings.request
        yield Label("Model config (↑↓ to choose)", classes="section")
        yield DataTable(id="configs", cursor_type="row", zebra_stripes=True)
        yield Label("Backends", classes="section")
        yield Static("probing backends…", id="backends")
        with Horizontal(id="backend-row"):
            yield Label("backend", classes="field-label")
            yield Select(
                [(b, b) for b in BACKENDS],
                value=request.backend,
                allow_blank=False,
                id="backend",
                compact=True,
            )
            yield Label("device", classes="field-label")
            # the device asked for is an option from the start: it must not read as "auto"
            devices = [AUTO] + ([request.device] if request.device else [])
            yield Select(
                [(d, d) for d in devices],
                value=request.device or AUTO,
                allow_blank=False,
                id="device",
                compact=True,
            )
        yield Label("Training", classes="section")
        with Grid(id="fields"):
            for spec in self.fields:
                yield Label(spec.label, classes="field-label")
                yield Input(
                    str(self.value_of(spec.name)),
                    id=f"field-{spec.name}",
                    compact=True,
                    tooltip=spec.help,
                )
        yield Static("", id="setup-error")
        yield Label("Corpus", classes="section")
        yield Input(
            request.data or "",
            placeholder="default: $LAL_DATA, else data/tinyshakespeare/input.txt",
            id="corpus",
            compact=True,
        )
        yield Static("", id="corpus-info")

    def value_of(self, name: str) -> int | float:
        return self.dropout if name == "dropout" else getattr(self.train_config, name)

    def on_mount(self) -> None:
        table = self.query_one("#configs", DataTable)
        table.add_columns("config", "layers", "heads", "width", "context", "params", "memory")
        self.fill_configs()
        table.move_cursor(row=list(self.settings.model_configs).index(self.settings.config))
        self.probe()
        self.count_corpus()

    def fill_configs(self) -> None:
        table = self.query_one("#configs", DataTable)
        batch, micro = self.train_config.batch_size, self.train_config.micro
        at = f"@ batch {batch}" if micro == batch else f"@ micro {micro} of {batch}"
        row = table.cursor_row
        table.clear()
        for name, cfg in self.settings.model_configs.items():
            table.add_row(
                name,
                str(cfg.n_layer),
                str(cfg.n_head),
                str(cfg.n_embd),
                str(cfg.block_size),
                params(count_parameters(cfg)),
                f"~{human_bytes(estimate_training_memory(cfg, micro))} {at}",
                key=name,
            )
        if row is not None and row < table.row_count:
            table.move_cursor(row=row)

    # -- backends -----------------------------------------------------------------------------
    @work(thread=True, group="probe", exit_on_error=False)
    def probe(self) -> list[BackendInfo]:
        return probe_backends()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "probe":
            return
        if event.state == WorkerState.SUCCESS:
            # torch and mlx just imported some 200,000 objects that live as long as the app. A
            # full collection walked them all: 180 ms of a 2-core machine that also trains, a
            # frame late and a key waiting. Frozen, later collections leave them out (the app
            # unfreezes them when it ends).
            gc.freeze()
            backends: list[BackendInfo] = event.worker.result
            self.query_one("#backends", Static).update("\n".join(b.line for b in backends))
            self.devices = {b.name: b.devices for b in backends}
            self.offer_devices()
        elif event.state == WorkerState.ERROR:
            self.query_one("#backends", Static).update(f"could not probe: {event.worker.error}")

    def offer_devices(self) -> None:
        """The chosen backend's devices in the device Select, keeping the choice if it can."""
        backend = str(self.query_one("#backend", Select).value)
        select = self.query_one("#device", Select)
        wanted = None if select.value == AUTO else str(select.value)
        devices = list(self.devices.get(backend, ()))
        if wanted and wanted not in devices and backend == self.settings.request.backend:
            devices.append(wanted)  # e.g. cuda:1: the engine checks it when training starts
        select.set_options([(d, d) for d in [AUTO, *devices]])
        select.value = wanted if wanted in devices else AUTO

    @on(Select.Changed, "#backend")
    def backend_chosen(self) -> None:
        if self.devices:
            self.offer_devices()

    def defaults_of(self, config: str) -> dict[str, int | float]:
        """Every recipe field's value for `config` as its recipe has them, and its dropout."""
        dropout = self.settings.model_configs[config].dropout
        return default_recipe(config).to_dict() | {"dropout": dropout}

    @on(DataTable.RowHighlighted, "#configs")
    def config_chosen(self) -> None:
        """A field left at the last config's default takes the new config's (small trains
        with more dropout, a shorter schedule and another beta2 than tiny); one the user typed
        stays. The recipe fields the pane does not show follow it too, unless a flag of
        `lal-tui` set them to something else than the last config's default."""
        config = self.config
        if config == self.shown_config or config not in self.settings.model_configs:
            return
        old, new = self.defaults_of(self.shown_config), self.defaults_of(config)
        self.shown_config = config
        shown = {spec.name for spec in self.fields}
        hidden = {
            name: value
            for name, value in new.items()
            if name not in shown and getattr(self.train_config, name) == old[name]
        }
        self.train_config = replace(self.train_config, **hidden)
        for spec in self.fields:
            field = self.query_one(f"#field-{spec.name}", Input)
            with contextlib.suppress(LalError):
                if old[spec.name] != new[spec.name] and spec.parse(field.value) == old[spec.name]:
                    field.value = str(new[spec.name])
        # `changed`, below, handles the same event next (Textual calls them in order): it posts
        # the settings, hidden fields included.

    # -- reporting ----------------------------------------------------------------------------
    @on(DataTable.RowHighlighted, "#configs")
    @on(Select.Changed, "#backend-row Select")
    @on(Input.Changed, "#fields Input")
    def changed(self) -> None:
        self.validate_fields()

    @property
    def config(self) -> str:
        table = self.query_one("#configs", DataTable)
        if table.cursor_row is None or not table.row_count:
            return self.settings.config
        return str(table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value)

    def validate_fields(self) -> str | None:
        """Check every field, show the first problem and post what the pane shows."""
        values, first_error = {}, None
        for spec in self.fields:
            field = self.query_one(f"#field-{spec.name}", Input)
            try:
                value = spec.parse(field.value)
                if spec.name == "dropout":
                    replace(self.settings.model_configs[self.config], dropout=value).validate()
                else:
                    replace(TrainConfig(), **{spec.name: value}).validate()
                values[spec.name] = value
                field.remove_class("-invalid")
            except LalError as exc:
                field.add_class("-invalid")
                first_error = first_error or str(exc)
        if first_error is None:
            dropout = values.pop("dropout")
            try:
                train = replace(self.train_config, **values).validate()
            except LalError as exc:
                first_error = str(exc)
            else:
                old = self.train_config
                batch_changed = (train.batch_size, train.micro) != (old.batch_size, old.micro)
                self.train_config, self.dropout = train, dropout
                if batch_changed:
                    self.fill_configs()
        self.query_one("#setup-error", Static).update(f"⚠ {first_error}" if first_error else "")
        self.post_settings(first_error)
        return first_error

    def post_settings(self, error: str | None) -> None:
        device = self.query_one("#device", Select).value
        self.post_message(
            self.SettingsChanged(
                config=self.config,
                dropout=self.dropout,
                train_config=self.train_config,
                backend=str(self.query_one("#backend", Select).value),
                device=None if device in (AUTO, Select.BLANK) else str(device),
                error=error,
            )
        )

    # -- corpus -------------------------------------------------------------------------------
    @on(Input.Changed, "#corpus")
    def corpus_changed(self, event: Input.Changed) -> None:
        corpus = event.value.strip() or None
        if corpus == self.corpus:
            return
        self.corpus = corpus
        self.post_message(self.CorpusChanged(corpus))
        if self._count_timer is not None:
            self._count_timer.stop()
        self._count_timer = self.set_timer(COUNT_AFTER_SECONDS, self.count_corpus)

    def count_corpus(self) -> None:
        self._count_timer = None
        self.show_corpus("counting tokens…", error=False)
        self.post_message(self.CountRequested(self.corpus))

    @on(CorpusCounted)
    def corpus_counted(self, message: CorpusCounted) -> None:
        if message.request != self.corpus:
            return  # an answer for a path since changed
        c = message.info
        self.show_corpus(
            f"{c.path}: {c.tokens:,} tokens ({c.train_tokens:,} train / {c.val_tokens:,} val)",
            error=False,
        )

    @on(EngineError)
    def corpus_failed(self, message: EngineError) -> None:
        message.stop()  # shown here, where the path is typed, as it is typed: no notification
        if not message.stale:
            self.show_corpus(f"⚠ {message.message}", error=True)

    def show_corpus(self, text: str, error: bool) -> None:
        info = self.query_one("#corpus-info", Static)
        info.set_class(error, "-error")
        info.update(text)
