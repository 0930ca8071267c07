"""The research loop (MOD-400, PIPE-210): config, state machines, policies, event log,
stages, the runner and its executors. See :mod:`alphaloop.orchestrator.runner`."""

from alphaloop.orchestrator.config import RunConfig, RunSummary
from alphaloop.orchestrator.runner import Runner

__all__ = ["RunConfig", "RunSummary", "Runner", "run"]


def run(config: RunConfig | dict[str, object] | str) -> RunSummary:
    """Run a loop from a RunConfig, a mapping or a YAML path; returns its RunSummary."""
    if isinstance(config, str):
        config = RunConfig.from_yaml(config)
    elif isinstance(config, dict):
        config = RunConfig.from_dict(config)
    return Runner(config).run()
