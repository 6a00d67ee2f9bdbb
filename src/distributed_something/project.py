"""A project: a loaded config, where it lives, and where the run keeps its local state."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from distributed_something.config.model import Config


@dataclass(frozen=True)
class Project:
    """A config together with the folder it was read from.

    Relative paths in the config (``local.root``) are relative to that folder, so a project
    runs the same from any working directory.
    """

    config: Config
    config_path: Path

    @property
    def base_dir(self) -> Path:
        return self.config_path.resolve().parent

    @property
    def state_dir(self) -> Path:
        """Local state of this app: run state, report, local queue, bucket and worker logs."""
        root = Path(self.config.local.root)
        if not root.is_absolute():
            root = self.base_dir / root
        return root / self.config.app_name

    @property
    def state_path(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def report_path(self) -> Path:
        return self.state_dir / "report.json"
