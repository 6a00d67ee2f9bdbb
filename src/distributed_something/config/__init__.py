"""Run configs: the typed model, and loading it from ``ds.toml`` or a legacy ``config.py``."""

from distributed_something.config.loader import find_config, load_config
from distributed_something.config.model import Config

__all__ = ["Config", "find_config", "load_config"]
