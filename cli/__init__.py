"""The `fssbench` command line: the top layer, the only one that imports everything. A module per
command group; methods and datasets contribute their own commands through the registry's command hook
(registry.commands, entry point group `fssbench.commands`). Heavy libraries (torch, model code) are
imported inside the commands that need them, so `fssbench --help` and `fssbench list` start instantly."""

from fssbench.cli import bench, catalog, evaluate, results, runs, scale, upgrade, visual  # noqa: F401  (they add their commands)
from fssbench.cli.app import add_contributed_commands, app, main

add_contributed_commands()

__all__ = ["app", "main"]
