"""Setup pane: pick a config and a backend, edit the training settings, check the corpus.

Every edit is validated as it is typed with the engine's own checks (`TrainConfig.validate`,
`ModelConfig.validate`); the first problem shows under the fields and training will not start
until it is fixed.
"""

from __future__ import annotations

from dataclasses import replace

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Grid, Horizontal, VerticalScroll
from textual.widgets import DataTable, Input, Label, Select, Static
from textual.worker import Worker, WorkerState

from lal_core.backends import BACKENDS, mlx_available
from lal_core.config import TrainConfig, count_parameters, estimate_training_memory
from lal_core.errors import LalError
from lal_tui.widgets.format import human_bytes, params

# field -> (label, parser); dropout belongs to the model config, the rest to TrainConfig
FIELDS: dict[str, tuple[str, type]] = {
    "batch_size": ("batch size", int),
    "lr": ("learning rate", float),
    "max_iters": ("max iterations", int),
    "eval_interval": ("eval interval", int),
    "patience": ("patience (evals)", int),
    "dropout": ("dropout", float),
    "seed": ("seed", int),
}


def probe_backends() -> tuple[list[str], list[str]]:
    """Lines describing the backends on this machine, and the torch devices present."""
    import torch

    from lal_core.device import mps_available

    devices = ["cpu"]
    torch_line = f"torch {torch.__version__}: cpu"
    if torch.cuda.is_available():
        devices.insert(0, "cuda")
        torch_line += f", cuda ({torch.cuda.get_device_name(0)})"
    if mps_available():
        devices.insert(0, "mps")
        torch_line += ", mps (Apple GPU)"
    torch_line += f"; default {devices[0]}"
    if mlx_available():
        mlx_line = "mlx: installed (Apple GPU on macOS, CPU on Linux)"
    else:
        mlx_line = "mlx: not installed; get it with: uv sync --extra mlx"
    return [torch_line, mlx_line], devices


def parse_field(key: str, text: str):
    label, kind = FIELDS[key]
    text = text.strip()
    try:
        return kind(text)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise LalError(f"{label} must be {what}, got {text!r}") from None


class SetupPane(VerticalScroll):
    """Config, backend, training settings and corpus."""

    def compose(self) -> ComposeResult:
        settings = self.app.settings
        yield Label("Model config (↑↓ to choose)", classes="section")
        yield DataTable(id="configs", cursor_type="row", zebra_stripes=True)
        yield Label("Backends", classes="section")
        yield Static("probing backends…", id="backends")
        with Horizontal(id="backend-row"):
            yield Label("backend", classes="field-label")
            yield Select(
                [(b, b) for b in BACKENDS],
                value=settings.backend,
                allow_blank=False,
                id="backend",
                compact=True,
            )
            yield Label("device", classes="field-label")
            yield Select(
                [("auto", "auto")], value="auto", allow_blank=False, id="device", compact=True
            )
        yield Label("Training", classes="section")
        with Grid(id="fields"):
            for key, (label, _) in FIELDS.items():
                value = settings.dropout if key == "dropout" else getattr(settings.train, key)
                yield Label(label, classes="field-label")
                yield Input(str(value), id=f"field-{key}", compact=True)
        yield Static("", id="setup-error")
        yield Label("Corpus", classes="section")
        yield Input(
            settings.data or "",
            placeholder="default: $LAL_DATA, else data/tinyshakespeare/input.txt",
            id="corpus",
            compact=True,
        )
        yield Static("", id="corpus-info")

    _corpus_timer = None

    def on_mount(self) -> None:
        table = self.query_one("#configs", DataTable)
        table.add_columns("config", "layers", "heads", "width", "context", "params", "memory")
        self.fill_configs()
        names = list(self.app.settings.model_configs)
        table.move_cursor(row=names.index(self.app.settings.config))
        self.probe()
        self.app.count_corpus(self.app.settings.data or "")

    def fill_configs(self) -> None:
        table = self.query_one("#configs", DataTable)
        batch = self.app.settings.train.batch_size
        row = table.cursor_row
        table.clear()
        for name, cfg in self.app.settings.model_configs.items():
            table.add_row(
                name,
                str(cfg.n_layer),
                str(cfg.n_head),
                str(cfg.n_embd),
                str(cfg.block_size),
                params(count_parameters(cfg)),
                f"~{human_bytes(estimate_training_memory(cfg, batch))} @ batch {batch}",
                key=name,
            )
        if row is not None and row < table.row_count:
            table.move_cursor(row=row)

    @work(thread=True, group="probe", exit_on_error=False)
    def probe(self) -> tuple[list[str], list[str]]:
        return probe_backends()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "probe":
            return
        if event.state == WorkerState.SUCCESS:
            lines, devices = event.worker.result
            self.query_one("#backends", Static).update("\n".join(lines))
            device = self.query_one("#device", Select)
            device.set_options([("auto", "auto")] + [(d, d) for d in devices])
            wanted = self.app.settings.device
            device.value = wanted if wanted in devices else "auto"
        elif event.state == WorkerState.ERROR:
            self.query_one("#backends", Static).update(f"could not probe: {event.worker.error}")

    @on(DataTable.RowHighlighted, "#configs")
    def config_chosen(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value:
            self.app.settings.config = event.row_key.value

    @on(Select.Changed, "#backend")
    def backend_chosen(self, event: Select.Changed) -> None:
        self.app.settings.backend = str(event.value)

    @on(Select.Changed, "#device")
    def device_chosen(self, event: Select.Changed) -> None:
        self.app.settings.device = (
            None if event.value == "auto" or event.select.is_blank() else event.value
        )

    @on(Input.Changed, "#fields Input")
    def field_changed(self, event: Input.Changed) -> None:
        self.validate_fields()

    def validate_fields(self) -> str | None:
        """Apply every valid field to the settings; show and return the first problem."""
        settings = self.app.settings
        values, first_error = {}, None
        for key in FIELDS:
            field = self.query_one(f"#field-{key}", Input)
            try:
                value = parse_field(key, field.value)
                if key == "dropout":
                    replace(settings.model_config(), dropout=value).validate()
                else:
                    replace(TrainConfig(), **{key: value}).validate()
                values[key] = value
                field.remove_class("-invalid")
            except LalError as exc:
                field.add_class("-invalid")
                first_error = first_error or str(exc)
        if first_error is None:
            dropout = values.pop("dropout")
            try:
                train = replace(settings.train, **values).validate()
            except LalError as exc:
                first_error = str(exc)
            else:
                batch_changed = train.batch_size != settings.train.batch_size
                settings.train, settings.dropout = train, dropout
                if batch_changed:
                    self.fill_configs()
        self.app.setup_error = first_error
        self.query_one("#setup-error", Static).update(f"⚠ {first_error}" if first_error else "")
        return first_error

    @on(Input.Changed, "#corpus")
    def corpus_changed(self, event: Input.Changed) -> None:
        """Count the corpus tokens once typing pauses (a path typed in full, not each prefix)."""
        self.app.settings.data = event.value.strip() or None
        if self._corpus_timer is not None:
            self._corpus_timer.stop()
        self._corpus_timer = self.set_timer(0.4, self.count_corpus)

    @on(Input.Submitted, "#corpus")
    def count_corpus(self) -> None:
        self._corpus_timer = None
        self.query_one("#corpus-info", Static).update("counting tokens…")
        self.app.count_corpus(self.app.settings.data or "")

    def show_corpus(self, text: str, error: bool) -> None:
        info = self.query_one("#corpus-info", Static)
        info.set_class(error, "-error")
        info.update(text)
