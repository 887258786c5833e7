"""Which executor a run uses: the ``executor:`` section of an env preset and ``--executor``."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from loss_rl.errors import ConfigError

if TYPE_CHECKING:
    from loss_rl.evaluation import Executor

#: Executor names, as accepted by ``--executor`` and ``executor: {name: ...}``.
EXECUTORS = ("inprocess", "ray")
#: Seconds a Ray cluster has to answer at start-up before the run stops with an error.
DEFAULT_CONNECT_TIMEOUT_S = 30.0
#: Times Ray re-runs a batch whose worker process died (the batch only; 0 = never).
DEFAULT_MAX_RETRIES = 3
_RAY_ONLY = ("address", "workers")


@dataclass(frozen=True)
class ExecutorConfig:
    """Where the evaluator's trainings run.

    Attributes:
        name: ``"inprocess"`` (this machine, the trainer's own worker processes; the default)
            or ``"ray"`` (batches of candidates as Ray tasks; ``pip install 'loss-rl[ray]'``).
        address: Ray only. ``None``: ``$RAY_ADDRESS`` if set (as under ``ray job submit``),
            else a private local Ray instance; ``"auto"``: the cluster started on this machine
            with ``ray start``; ``"HOST:PORT"``: that cluster's head (GCS port, 6379 by default);
            ``"ray://HOST:PORT"``: a Ray Client server.
        workers: Ray only. Batches an evaluation call is split into, at most (default: the
            cluster's CPUs); also the CPUs of a private local instance.
        connect_timeout_s: Ray only. Seconds the cluster has to answer at start-up.
        max_retries: Ray only. Times a batch is re-run when its worker process dies.
    """

    name: str = "inprocess"
    address: str | None = None
    workers: int | None = None
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    max_retries: int = DEFAULT_MAX_RETRIES

    def validate(self, prefix: str = "executor") -> None:
        """Check the values.

        Raises:
            ConfigError: naming the field (``<prefix>.<field>``).
        """
        if self.name not in EXECUTORS:
            raise ConfigError(
                f"unknown executor {self.name!r}; choose one of {', '.join(EXECUTORS)}",
                field=f"{prefix}.name",
            )
        if self.name != "ray":
            for k in _RAY_ONLY:
                if getattr(self, k) is not None:
                    raise ConfigError(
                        f"applies to the ray executor only (this one is {self.name!r})",
                        field=f"{prefix}.{k}",
                    )
        if self.address is not None and (not isinstance(self.address, str) or
                                         not self.address.strip()):  # fmt: skip
            raise ConfigError(
                f"must be 'auto', HOST:PORT or ray://HOST:PORT, got {self.address!r}",
                field=f"{prefix}.address",
            )
        if self.workers is not None and (not _is_int(self.workers) or self.workers < 1):
            raise ConfigError(
                f"must be a positive integer, got {self.workers!r}", field=f"{prefix}.workers"
            )
        t = self.connect_timeout_s
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not t > 0:
            raise ConfigError(
                f"must be a positive number of seconds, got {t!r}",
                field=f"{prefix}.connect_timeout_s",
            )
        if not _is_int(self.max_retries) or self.max_retries < 0:
            raise ConfigError(
                f"must be an integer >= 0, got {self.max_retries!r}",
                field=f"{prefix}.max_retries",
            )

    @classmethod
    def from_dict(cls, data: Any, prefix: str = "executor") -> ExecutorConfig:
        """Validate an ``executor:`` mapping (``None`` or ``{}``: in-process).

        Raises:
            ConfigError: naming the field for unknown keys, wrong types or bad values.
        """
        if data is None:
            data = {}
        if isinstance(data, str):  # shorthand: `executor: ray`
            data = {"name": data}
        if not isinstance(data, Mapping):
            raise ConfigError(f"must be a mapping, got {data!r}", field=prefix)
        allowed = [f.name for f in dataclasses.fields(cls)]
        for k in data:
            if k not in allowed:
                raise ConfigError(
                    f"unknown key {k!r}; allowed: {', '.join(allowed)}", field=f"{prefix}.{k}"
                )
        cfg = cls(**data)
        cfg.validate(prefix)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``config.yaml`` (the Ray-only keys only for Ray)."""
        out: dict[str, Any] = {"name": self.name}
        if self.name == "ray":
            out.update(
                address=self.address,
                workers=self.workers,
                connect_timeout_s=self.connect_timeout_s,
                max_retries=self.max_retries,
            )
        return out

    def override(self, name: str | None = None, address: str | None = None) -> ExecutorConfig:
        """This configuration with command-line choices applied.

        A different ``name`` starts from that executor's defaults (a preset's Ray settings do not
        carry over to another executor); ``address`` needs the Ray executor.

        Raises:
            ConfigError: for an unknown name, or an address without the Ray executor.
        """
        cfg = self
        if name is not None and name != self.name:
            cfg = ExecutorConfig.from_dict({"name": name})
        if address is not None:
            if cfg.name != "ray":
                raise ConfigError(
                    "--ray-address needs the ray executor: add --executor ray", field="ray_address"
                )
            cfg = dataclasses.replace(cfg, address=address)
        cfg.validate()
        return cfg


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def require_ray() -> Any:
    """Import and return the :mod:`ray` module.

    Raises:
        ConfigError: with the install command when Ray is not installed.
    """
    try:
        import ray
    except ImportError as err:
        raise ConfigError(
            f"the ray executor needs Ray, which is not installed ({err}): "
            "pip install 'loss-rl[ray]'",
            field="executor",
        ) from err
    return ray


def make_executor(config: ExecutorConfig | None = None) -> Executor:
    """The executor a configuration names (nothing is started or connected yet).

    Raises:
        ConfigError: for the Ray executor when Ray is not installed.
    """
    from loss_rl.evaluation import InProcessExecutor

    config = config or ExecutorConfig()
    config.validate()
    if config.name == "inprocess":
        return InProcessExecutor()
    require_ray()
    from loss_rl.executors._ray import RayExecutor

    return RayExecutor(
        config.address, workers=config.workers, connect_timeout_s=config.connect_timeout_s,
        max_retries=config.max_retries,
    )  # fmt: skip
