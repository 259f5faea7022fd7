"""Structured schemas for the config groups: typos and wrong types fail before any work.

``validate(cfg)`` merges each group with its dataclass schema (unknown keys and values of the
wrong type are rejected by OmegaConf), then checks ranges. Every failure is a one-line
:class:`pfbench.ConfigError` naming the key, the bad value and what is allowed. The ``eval`` group's
schema is built from the distance registry (:func:`pfbench.metrics.evaluate.resolve_eval_config`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from pfbench import ConfigError


@dataclass
class InstanceConfig:
    kind: str = "random"  # random | smoothed | file | wds (one-layer ReLU recipe of Wu-Dimakis-Sanghavi)
    sigma: float = 0.1
    base: str = "random"  # random | zero | file
    path: str | None = None
    kappa: float | None = None  # one-layer ReLU: condition number of W W^T (kind: wds)


@dataclass
class DataConfig:
    name: str = "quadratic"
    latent_dim: int = 5
    out_dim: int | None = 20  # data=file: null = from the file
    n_train: int | None = 10000  # data=file: null = every row not held out
    n_test: int = 2000
    n_val: int = 0  # validation sample for every selection (own seeded stream; carved from data=file)
    path: str | None = None  # data=file: the sample matrix
    key: str | None = None  # data=file: array name inside .npz / .pt
    family: str | None = None  # data=file: the family believed to have generated the samples
    instance: InstanceConfig = field(default_factory=InstanceConfig)
    # the family's own arguments (degree, rank, hidden, ...) come from its Args dataclass: data_schema()


def data_schema(section: Any) -> type:
    """DataConfig extended by the family's own arguments (``FAMILIES[name].Args``: degree, hidden, ...).

    The family is ``data.name``, or ``data.family`` for data=file; a family without arguments (or an
    unknown name, refused later with the list of families) leaves DataConfig as it is.
    """
    from dataclasses import fields, make_dataclass

    from pfbench.families import FAMILIES

    name = section.get("name", DataConfig.name) if section is not None else DataConfig.name
    fam = FAMILIES.get(section.get("family") if name == "file" else name)
    if fam is None or not fields(fam.Args):
        return DataConfig
    return make_dataclass(f"DataConfig_{fam.family}", [], bases=(DataConfig, fam.Args))


@dataclass
class NetConfig:
    width: int = 128
    depth: int = 2
    activation: str = "relu"


@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 256
    n_critic: int = 5
    optimizer: str = "adam"
    lr_g: float = 1e-4
    lr_d: float = 1e-4
    betas: list[float] | None = None
    clip: float | None = None
    gp_weight: float = 10.0
    log_every: int = 25
    checkpoint_every: int = 500
    eval_every: int | None = None  # periodic evaluation on the validation split; null = off
    select_by: str = "val_moments"  # selection statistic (pfbench.selection.STATISTICS)
    patience: int | None = None  # early stop after this many evaluations without improvement; null = off
    ema: float | None = None  # EMA decay of an averaged generator (e.g. 0.999); null = off


@dataclass
class ModelConfig:
    name: str = "wgan"
    kind: str = "gan"  # gan | vae | estimator
    loss: str | None = None
    generator: str = "family"  # family | mlp
    generator_mlp: NetConfig = field(default_factory=NetConfig)
    critic: NetConfig = field(default_factory=NetConfig)
    encoder: NetConfig = field(default_factory=NetConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    params: dict[str, Any] = field(default_factory=dict)  # estimator hyperparameters (free-form)
    tuned: str | None = None  # where tuned hyperparameters came from (conf/model/*_tuned.yaml)


@dataclass
class LoggerConfig:
    name: str = "wandb"  # wandb | csv | tensorboard | none (pfbench.tracking.LOGGERS)
    mode: str = "auto"
    project: str = "pfbench"
    entity: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    init_timeout: float = 30.0  # seconds W&B may take to start online before the run logs offline


@dataclass
class InversionTask:
    """Invert the fitted generator on fresh samples of itself (layerwise LP, Lei et al.)."""

    enabled: bool = False
    n: int = 20
    noise_std: float = 1e-6
    method: str = "lp"  # lp | gd


@dataclass
class CompressedSensingTask:
    """Recover fresh true samples from m Gaussian measurements through the fitted generator (Bora et al.)."""

    enabled: bool = False
    ms: list[int] = field(default_factory=lambda: [10, 25, 50, 100, 200])
    n: int = 10
    noise_std: float = 0.0
    restarts: int = 3
    steps: int = 300


@dataclass
class TasksConfig:
    inversion: InversionTask = field(default_factory=InversionTask)
    compressed_sensing: CompressedSensingTask = field(default_factory=CompressedSensingTask)


SCHEMAS = {"data": DataConfig, "model": ModelConfig, "logger": LoggerConfig, "tasks": TasksConfig}
TOP_LEVEL = {"seed", "device", "threads", "resume", "overwrite", "progress", "plots", "tags", "profile", "data",
             "model", "eval", "logger", "tasks", "experiment", "hydra"}


def _valid_keys(schema: type, path: list[str]) -> list[str]:
    node: Any = OmegaConf.structured(schema)
    for p in path:
        node = node[p]
    return sorted(node.keys()) if isinstance(node, DictConfig) else []


def _merge(group: str, schema: type, section: Any) -> DictConfig:
    try:
        return OmegaConf.merge(OmegaConf.structured(schema), section)
    except ConfigKeyError as e:
        full = str(e.full_key or e.key)
        parent = full.split(".")[:-1]
        valid = _valid_keys(schema, parent)
        raise ConfigError(
            f"unknown config key '{group}.{full}'; valid keys under {'.'.join([group, *parent])}: {valid}"
        ) from None
    except OmegaConfBaseException as e:
        msg = str(e).splitlines()[0]
        raise ConfigError(f"bad value for '{group}.{e.full_key}': {msg}") from None


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def validate(cfg: DictConfig) -> DictConfig:
    """Return a copy of ``cfg`` with typed, defaulted groups, or raise ConfigError (one line)."""
    if "model" not in cfg or cfg.model is None:
        raise ConfigError("no method chosen: add +model=<name>, e.g. +model=wgan (see conf/model/)")
    unknown = sorted(set(cfg.keys()) - TOP_LEVEL)
    _check(not unknown, f"unknown top-level config key(s) {unknown}; valid keys: {sorted(TOP_LEVEL - {'hydra'})}")
    out = OmegaConf.create({k: v for k, v in cfg.items() if k not in SCHEMAS and k != "hydra"})
    for group, schema in SCHEMAS.items():
        section = cfg[group] if group in cfg else {}
        out[group] = _merge(group, data_schema(section) if group == "data" else schema, section)
    d, m = out.data, out.model
    _check(isinstance(cfg.seed, int) and cfg.seed >= 0, f"seed={cfg.seed} must be an integer >= 0")
    _check(isinstance(cfg.threads, int) and cfg.threads >= 1, f"threads={cfg.threads} must be an integer >= 1")
    _check(cfg.device in ("cpu", "cuda"), f"device='{cfg.device}' must be cpu or cuda")
    resume, overwrite = cfg.get("resume", False), cfg.get("overwrite", False)
    _check(resume in (True, False, "auto"), f"resume={resume} must be true, false or auto")
    resume = str(resume).lower()
    _check(overwrite in (True, False), f"overwrite={overwrite} must be true or false")
    _check(not (overwrite and resume in ("true", "auto")),
           f"resume={resume} and overwrite=true contradict each other: continue the run in the directory "
           f"(resume) or replace it (overwrite), not both")
    from pfbench.families import FAMILIES

    _check(d.latent_dim >= 1, f"data.latent_dim={d.latent_dim} must be >= 1")
    if d.name == "file":
        _check(bool(d.path), "data=file needs data.path=/path/to/samples (.npy/.npz/.csv/.pt)")
        _check(d.family is None or d.family in FAMILIES,
               f"data.family='{d.family}' is not one of {sorted(FAMILIES)} (or null)")
        _check(m.kind == "estimator" or m.generator == "mlp" or d.family is not None,
               "data=file has no known family for model.generator=family; set model.generator=mlp "
               "or data.family=<the family you believe generated the samples>")
    else:
        _check(d.out_dim is not None and d.out_dim >= 1, f"data.out_dim={d.out_dim} must be >= 1")
        _check(d.n_train is not None, f"data.n_train must be set for data={d.name}")
    _check(d.out_dim is None or d.out_dim >= 1, f"data.out_dim={d.out_dim} must be >= 1")
    _check(d.n_train is None or d.n_train > 0, f"data.n_train={d.n_train} must be > 0 (number of training samples)")
    _check(d.n_test >= 2, f"data.n_test={d.n_test} must be >= 2 (held-out samples for the evaluation)")
    _check(d.n_val == 0 or d.n_val >= 2, f"data.n_val={d.n_val} must be 0 (no validation split) or >= 2")
    _check(d.instance.sigma >= 0, f"data.instance.sigma={d.instance.sigma} must be >= 0 (a noise level)")
    fam = FAMILIES.get(d.family if d.name == "file" else d.name)
    if fam is not None:
        fam.Args.from_kwargs(d)  # the family's own ranges (data.degree >= 1, ...), one line each
    _check(m.kind in ("gan", "vae", "estimator"), f"model.kind='{m.kind}' must be gan, vae or estimator")
    if m.kind != "estimator":
        t = m.train
        _check(t.steps >= 1, f"model.train.steps={t.steps} must be >= 1")
        _check(t.batch_size >= 1, f"model.train.batch_size={t.batch_size} must be >= 1")
        _check(t.n_critic >= 1, f"model.train.n_critic={t.n_critic} must be >= 1")
        _check(t.lr_g > 0 and t.lr_d > 0, f"model.train.lr_g={t.lr_g}, lr_d={t.lr_d} must be > 0")
        _check(t.log_every >= 1, f"model.train.log_every={t.log_every} must be >= 1")
        _check(t.checkpoint_every >= 1, f"model.train.checkpoint_every={t.checkpoint_every} must be >= 1")
        _check(t.clip is None or t.clip > 0, f"model.train.clip={t.clip} must be > 0 or null")
        _check(t.gp_weight >= 0, f"model.train.gp_weight={t.gp_weight} must be >= 0")
        _check(t.optimizer in ("adam", "rmsprop"), f"model.train.optimizer='{t.optimizer}' must be adam or rmsprop")
        from pfbench.selection import STATISTICS

        _check(t.eval_every is None or t.eval_every >= 1, f"model.train.eval_every={t.eval_every} must be >= 1 or null")
        _check(t.eval_every is None or d.n_val >= 2,
               f"model.train.eval_every={t.eval_every} selects on validation data; set data.n_val (e.g. 5000)")
        _check(t.select_by in STATISTICS, f"model.train.select_by='{t.select_by}' must be one of {list(STATISTICS)}")
        _check(t.patience is None or (t.patience >= 1 and t.eval_every is not None),
               f"model.train.patience={t.patience} must be >= 1 and needs model.train.eval_every")
        _check(t.ema is None or 0.0 < t.ema < 1.0, f"model.train.ema={t.ema} must be in (0, 1) or null")
        for net in ("generator_mlp", "critic", "encoder"):
            n = m[net]
            _check(n.width >= 1 and n.depth >= 0, f"model.{net}: width={n.width} must be >= 1, depth={n.depth} >= 0")
    inv, cs = out.tasks.inversion, out.tasks.compressed_sensing
    _check(inv.n >= 1 and inv.noise_std >= 0 and inv.method in ("lp", "gd"),
           f"tasks.inversion: n={inv.n} must be >= 1, noise_std={inv.noise_std} >= 0, method={inv.method} lp|gd")
    _check(cs.n >= 1 and cs.noise_std >= 0 and len(cs.ms) > 0 and min(cs.ms) >= 1,
           f"tasks.compressed_sensing: n={cs.n} >= 1, noise_std={cs.noise_std} >= 0, ms={list(cs.ms)} all >= 1")
    _check(m.generator in ("family", "mlp"), f"model.generator='{m.generator}' must be family or mlp")
    _check(out.logger.init_timeout > 0, f"logger.init_timeout={out.logger.init_timeout} must be > 0 (seconds)")
    from pfbench.tracking import check_logger, check_tags

    out["tags"] = check_tags(cfg.get("tags"))
    _check(cfg.get("profile", False) in (True, False), f"profile={cfg.get('profile')} must be true or false")
    check_logger(out.logger)  # a known name; logger=tensorboard: its package is installed
    _check(out.logger.mode in ("auto", "offline", "online", "disabled"),
           f"logger.mode='{out.logger.mode}' must be auto, offline, online or disabled")
    from pfbench.metrics.evaluate import resolve_eval_config

    # eval: its schema (EvalConfig) is built from the distance registry, so it is merged there, with its
    # own messages; the exact-W memory check against the held-out sample runs now, not after training.
    # The typed result is not checked again (evaluate(cfg=cfg.eval) uses it as it is).
    out["eval"] = resolve_eval_config(cfg.get("eval"), n_test=d.n_test)
    return out
