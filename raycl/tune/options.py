"""What a search is asked to do: :class:`SearchOptions` (``launch/tune.py`` fills it from its flags),
its protocols and its checks."""

from __future__ import annotations

import dataclasses

from raycl import storage
from raycl.data import check_benchmark
from raycl.device import PRECISIONS
from raycl.errors import RayclError, unknown
from raycl.methods import get_method
from raycl.selection import ChfSettings
from raycl.tune.placement import check_gpus_per_trial

# Stream-level protocols choose one configuration for the stream; the per-task ones
# (raycl.selection) choose the hyperparameters task by task.
STREAM_PROTOCOLS = ("seen-tasks", "first-task", "end-of-training")
PROTOCOLS = STREAM_PROTOCOLS + ("chf", "current-task", "seen-tasks-val", "pbt")
TRIAL_DATA_SEEDS = ("vary", "same")
# raycl: the best-args YAML only; mammoth: also mammoth's models/config/<model>.yaml beside it.
EXPORT_FORMATS = ("raycl", "mammoth")
AUTO = "auto"


@dataclasses.dataclass
class SearchOptions:
    """Everything a search needs; ``launch/tune.py`` fills it from its flags."""

    method: str
    dataset: str = "seq-digits"
    samples: int = 16
    # One size, or several (a paper's table: each searched as if alone, in one search).
    buffer_size: int | list[int] | None = None
    fixed: dict = dataclasses.field(default_factory=dict)
    # Configurations tried first (e.g. a paper's published arguments); only searched keys are used.
    start_points: list[dict] = dataclasses.field(default_factory=list)
    # A file whose values for this method, benchmark and buffer size are tried first (before
    # start_points): mammoth's utils/best_args.py or models/config/<model>.yaml, or raycl's best-args.
    start_from: str | None = None
    space_path: str | None = None
    protocol: str = "seen-tasks"
    protocol_tasks: int = 2
    # Tasks trained before the first rung; "auto": the method's first task that uses its stability
    # mechanism (task 2 for replay, penalties, distillation), so the rung sees what is tuned act.
    grace_period: int | str = AUTO
    reduction_factor: int = 4
    # A random share of configurations never stopped early: the unselected sample that measures how
    # well each rung's scores predict the final objective.
    audit_fraction: float = 0.0
    seed: int = 0
    # Each trial trains its configuration on seeds seed .. seed + trial_seeds - 1 as one population;
    # with trial_data_seeds "vary" seed i also draws its own data (data seed data_seed + i).
    trial_seeds: int = 1
    trial_data_seeds: str = "vary"
    # Each trial trains a cohort of this many configurations as one population ("auto": enough
    # cohorts for two per trial slot, see cohort_size).
    population: int | str = 1
    search_seed: int = 0
    # TPE sees the best trials and this many of the most recent (raycl.tune.sampler); 0: all of them.
    tpe_window: int = 300
    cpus_per_trial: float = 1.0
    # 0, a fraction in (0, 1) (trials share a GPU) or 1: a trial trains on one device.
    gpus_per_trial: float = 0.0
    # Skip the check that some node has --gpus-per-trial GPUs: wait for Ray to place the trials (a
    # cluster still scaling up).
    wait_for_resources: bool = False
    # fp32, tf32 or bf16 (raycl.device): every trial and the final evaluation train at it.
    precision: str = "fp32"
    max_concurrent: int | None = None
    address: str | None = None
    storage_path: str = "experiments"
    name: str | None = None
    resume: bool = False
    optuna_storage: str | None = None
    best_args: str | None = None
    parquet: str | None = None
    export_format: str = "raycl"
    # Experiment trackers (--tracker mlflow[:URI], wandb[:PROJECT]): one run per configuration.
    trackers: tuple[str, ...] = ()
    final_eval_seeds: int = 0
    # Final evaluation: data seed = training seed (averages over permutations/angles too), and the
    # share of training data held out (0 = train on all of it, as papers do after their search).
    final_eval_vary_data: bool = False
    final_eval_val_fraction: float | None = None
    data_root: str | None = None
    val_fraction: float = 0.1
    data_seed: int = 0
    samples_per_task: int | None = None
    # The benchmark's own options (--benchmark-option KEY=VALUE) and a backbone replacing its
    # network (--backbone); both travel to every trial, the final evaluation and the best-args file.
    benchmark_options: dict = dataclasses.field(default_factory=dict)
    backbone: str | None = None
    dashboard: bool = False
    verbose: int = 1
    # Per-task protocols: the continual hyperparameter framework's grid and decay (the DER
    # repository's values), and the candidates Optuna proposes per task.
    chf_grid: tuple[float, ...] = ChfSettings.grid
    chf_drop: float = ChfSettings.drop
    chf_decay: float = ChfSettings.decay
    chf_decay_limit: int = ChfSettings.decay_limit
    candidates: int = 8

    @property
    def per_task(self) -> bool:
        return self.protocol not in STREAM_PROTOCOLS

    @property
    def buffer_sizes(self) -> list[int | None]:
        """The buffer sizes searched: one (or None, the method's default), or a table's several."""
        return list(self.buffer_size) if isinstance(self.buffer_size, (list, tuple)) else [self.buffer_size]

    @property
    def table(self) -> bool:
        """Whether several buffer sizes are searched at once."""
        return len(self.buffer_sizes) > 1

    def validate(self) -> None:
        get_method(self.method)  # unknown, or a plugin that does not load: one clear error
        # The dataset's name, options and backbone; the options typed, defaults filled in: what the
        # best-args file records and a replay passes back.
        parsed = check_benchmark(self.dataset, self.benchmark_options, self.backbone)
        self.benchmark_options = dataclasses.asdict(parsed) if parsed is not None else {}
        if self.protocol not in PROTOCOLS:
            raise unknown("protocol", self.protocol, PROTOCOLS)
        if self.trial_data_seeds not in TRIAL_DATA_SEEDS:
            raise unknown("trial data seeds", self.trial_data_seeds, TRIAL_DATA_SEEDS)
        for flag, value in (("--grace-period", self.grace_period), ("--population", self.population)):
            if value != AUTO and (isinstance(value, bool) or not isinstance(value, int)):
                raise RayclError(f"{flag} must be a whole number or {AUTO}, got {value!r}")
        for flag, value, low in (("--samples", self.samples, 1), ("--grace-period", self.grace_period, 1),
                                 ("--reduction-factor", self.reduction_factor, 2),
                                 ("--protocol-tasks", self.protocol_tasks, 1),
                                 ("--final-eval-seeds", self.final_eval_seeds, 0),
                                 ("--trial-seeds", self.trial_seeds, 1), ("--population", self.population, 1),
                                 ("--tpe-window", self.tpe_window, 0)):
            if value != AUTO and value < low:
                raise RayclError(f"{flag} must be at least {low}, got {value}")
        if not 0.0 <= self.audit_fraction <= 1.0:
            raise RayclError(f"--audit-fraction must be between 0 and 1, got {self.audit_fraction}")
        if self.per_task:
            self.chf_settings.validate()
            if self.candidates < 1:
                raise RayclError(f"--candidates must be at least 1, got {self.candidates}")
            for flag, value in (("--population", self.population), ("--trial-seeds", self.trial_seeds)):
                if value not in (1, AUTO):
                    raise RayclError(f"{flag} does not apply to --protocol {self.protocol} (it trains one path "
                                     "whose candidates are a population already)")
        if self.export_format not in EXPORT_FORMATS:
            raise unknown("export format", self.export_format, EXPORT_FORMATS)
        from raycl.tune.trackers import check_trackers

        check_trackers(self.trackers)
        if self.per_task:
            for flag, given in (("--start-from", self.start_from), ("--export-format mammoth",
                                                                    self.export_format == "mammoth"),
                                ("--tracker", bool(self.trackers))):
                if given:
                    raise RayclError(f"{flag} applies to the stream protocols ({', '.join(STREAM_PROTOCOLS)}), "
                                     f"not to --protocol {self.protocol}")
        if self.cpus_per_trial <= 0:
            raise RayclError(f"--cpus-per-trial must be > 0, got {self.cpus_per_trial}")
        check_gpus_per_trial(self.gpus_per_trial)
        if self.precision not in PRECISIONS:
            raise unknown("precision", self.precision, PRECISIONS)
        if self.resume and not self.name:
            raise RayclError("--resume needs --name of the experiment to continue")
        if isinstance(self.buffer_size, (list, tuple)):
            self._validate_table()

    def _validate_table(self) -> None:
        sizes = self.buffer_sizes
        if len(set(sizes)) != len(sizes) or any(s is None or s < 1 for s in sizes):
            raise RayclError(f"--buffer-size: a list of different sizes of at least 1, got {','.join(map(str, sizes))}")
        if len(sizes) == 1:
            self.buffer_size = sizes[0]
            return
        if self.per_task:
            raise RayclError(f"--buffer-size {','.join(map(str, sizes))}: a list of sizes is searched by the stream "
                             f"protocols ({', '.join(STREAM_PROTOCOLS)}), not by --protocol {self.protocol}: search "
                             "one size at a time")
        if self.population == 1:
            raise RayclError(f"--buffer-size {','.join(map(str, sizes))}: a list of sizes is searched in full "
                             "populations: --population auto (the default) or a number above 1, not 1")
        if self.start_from:
            raise RayclError("--start-from takes one buffer size's values: give --buffer-size one size with it")

    @property
    def chf_settings(self) -> ChfSettings:
        return ChfSettings(tuple(self.chf_grid), self.chf_drop, self.chf_decay, self.chf_decay_limit)

    @property
    def experiment_name(self) -> str:
        if self.name:
            return self.name
        buffer = self.buffer_size
        if buffer is None:
            buffer = getattr(get_method(self.method).Config(), "buffer_size", None)
        if isinstance(buffer, (list, tuple)):
            buffer = "-".join(map(str, buffer))
        # A plugin named package.module:Class: no colon in a folder name (storage URIs read it as a scheme).
        method = self.method.replace(":", ".")
        return f"{method}-{self.dataset}" + ("" if buffer is None else f"-b{buffer}")

    @property
    def ray_name(self) -> str:
        """The search as the Ray dashboard names it: its trials' actors, and its job before a colon."""
        return f"raycl {self.experiment_name}"

    @property
    def job_name(self) -> str:
        cohorts = ", cohorts of automatic size" if self.population == AUTO else \
            f", cohorts of {self.population}" if self.population > 1 else ""
        return f"{self.ray_name}: {self.method} on {self.dataset}, {self.samples} samples{cohorts}"

    @property
    def experiment_dir(self) -> str:
        """The experiment's folder: a local absolute path, or a URI such as s3://bucket/prefix/name."""
        return storage.join(storage.resolve(self.storage_path), self.experiment_name)
