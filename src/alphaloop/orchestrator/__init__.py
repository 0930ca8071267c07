"""The research loop (MOD-400, PIPE-210): config, state machines, policies, event log,
stages, the runner and its executors. See :mod:`alphaloop.orchestrator.runner`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from alphaloop.orchestrator.config import RunConfig, RunSummary

if TYPE_CHECKING:
    from alphaloop.orchestrator.runner import Runner

__all__ = ["RunConfig", "RunSummary", "Runner", "run"]


def __getattr__(name: str) -> Any:
    # the runner brings the engines, numba and the statistics (seconds of imports):
    # loaded on first use, so that what needs the config models only (`kb runs`,
    # `status`) starts fast
    if name == "Runner":
        from alphaloop.orchestrator.runner import Runner

        return Runner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run(config: RunConfig | dict[str, object] | str) -> RunSummary:
    """Run a loop from a RunConfig, a mapping or a YAML path; returns its RunSummary."""
    from alphaloop.orchestrator.runner import Runner

    if isinstance(config, str):
        config = RunConfig.from_yaml(config)
    elif isinstance(config, dict):
        config = RunConfig.from_dict(config)
    return Runner(config).run()
