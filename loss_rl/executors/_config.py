"""Which executor a run uses: the ``executor:`` section of an env preset and ``--executor``."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from loss_rl.errors import ConfigError
from loss_rl.schema import build, check_choice, check_int, fail, is_number

if TYPE_CHECKING:
    import torch

#: Executor names, as accepted by ``--executor`` and ``executor: {name: ...}``.
EXECUTORS = ("inprocess", "ray")
#: Seconds a Ray cluster has to answer at start-up before the run stops with an error.
DEFAULT_CONNECT_TIMEOUT_S = 30.0
#: Times Ray re-runs a batch whose worker process died (the batch only; 0 = never).
DEFAULT_MAX_RETRIES = 3
_RAY_ONLY = ("address", "workers")
_INPROCESS_ONLY = ("device",)
#: Values of ``executor.device`` (and ``--device``): see :func:`loss_rl.training.resolve_device`.
_DEVICE = re.compile(r"cpu|cuda(:\d+)?|auto")


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
        device: In-process only. Where the inner trainings run: ``cpu`` (the default: the
            trainer's worker processes), ``cuda`` / ``cuda:N`` (one GPU, every model of a batch
            on it, in the search process), or ``auto`` (``cuda`` when a GPU is available, else
            ``cpu``). A GPU the machine lacks stops the run before it starts.
    """

    name: str = "inprocess"
    address: str | None = None
    workers: int | None = None
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    max_retries: int = DEFAULT_MAX_RETRIES
    device: str | None = None

    def validate(self, prefix: str = "executor") -> None:
        """Check the values.

        Raises:
            ConfigError: naming the field (``<prefix>.<field>``).
        """
        check_choice(
            self.name,
            f"{prefix}.name",
            EXECUTORS,
            "unknown executor {value!r}; choose one of {choices}",
        )
        if self.name != "ray":
            for k in _RAY_ONLY:
                if getattr(self, k) is not None:
                    fail(
                        f"{prefix}.{k}",
                        f"applies to the ray executor only (this one is {self.name!r})",
                    )
        if self.name != "inprocess":
            for k in _INPROCESS_ONLY:
                if getattr(self, k) is not None:
                    fail(
                        f"{prefix}.{k}",
                        f"applies to the inprocess executor only (this one is {self.name!r})",
                    )
        device = self.device
        if device is not None and not (isinstance(device, str) and _DEVICE.fullmatch(device)):
            fail(f"{prefix}.device", f"must be cpu, cuda, cuda:N or auto, got {device!r}")
        address = self.address
        if address is not None and (not isinstance(address, str) or not address.strip()):
            fail(
                f"{prefix}.address",
                f"must be 'auto', HOST:PORT or ray://HOST:PORT, got {address!r}",
            )
        if self.workers is not None:
            check_int(
                self.workers,
                f"{prefix}.workers",
                1,
                message="must be a positive integer, got {value!r}",
            )
        t = self.connect_timeout_s
        if not (is_number(t, finite=False) and t > 0):
            fail(f"{prefix}.connect_timeout_s", f"must be a positive number of seconds, got {t!r}")
        check_int(
            self.max_retries,
            f"{prefix}.max_retries",
            0,
            message="must be an integer >= 0, got {value!r}",
        )

    @classmethod
    def from_dict(cls, data: Any, prefix: str = "executor") -> ExecutorConfig:
        """Validate an ``executor:`` mapping (``None`` or ``{}``: in-process).

        Raises:
            ConfigError: naming the field for unknown keys, wrong types or bad values.
        """
        if isinstance(data, str):  # shorthand: `executor: ray`
            data = {"name": data}
        # Values are left to validate(), which also checks configs built directly.
        cfg = build(
            cls, data, prefix, strict=False, mapping_message="must be a mapping, got {value!r}"
        )
        cfg.validate(prefix)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``config.yaml`` (the Ray-only keys only for Ray)."""
        out: dict[str, Any] = {"name": self.name}
        if self.device is not None:
            out["device"] = self.device
        if self.name == "ray":
            out.update(
                address=self.address,
                workers=self.workers,
                connect_timeout_s=self.connect_timeout_s,
                max_retries=self.max_retries,
            )
        return out

    def override(
        self, name: str | None = None, address: str | None = None, device: str | None = None
    ) -> ExecutorConfig:
        """This configuration with command-line choices applied.

        A different ``name`` starts from that executor's defaults (a preset's Ray settings do not
        carry over to another executor); ``address`` needs the Ray executor, ``device`` the
        in-process one.

        Raises:
            ConfigError: for an unknown name or device, an address without the Ray executor, or
                a device with it.
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
        if device is not None:
            if cfg.name != "inprocess":
                raise ConfigError(
                    f"--device applies to the inprocess executor (this one is {cfg.name!r}); "
                    "remove --device or use --executor inprocess",
                    field="device",
                )
            cfg = dataclasses.replace(cfg, device=device)
        cfg.validate()
        return cfg

    def resolved_device(self, field: str = "executor.device") -> torch.device:
        """The device the trainings run on, checked against this machine.

        Args:
            field: The setting's name in errors (``device`` for ``--device``).

        Raises:
            ConfigError: (``field``) for a GPU this machine does not have.
        """
        from loss_rl.training import resolve_device

        try:
            return resolve_device(self.device)
        except ConfigError as err:
            message = str(err).removeprefix(f"{err.field}: ")
            raise ConfigError(message, field=field) from None


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
