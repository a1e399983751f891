"""
Run folders (:mod:`~pyprobvae.runs.folder`), the verbs that compute with
them (:mod:`~pyprobvae.runs.verbs`) and the writers of what they compute
(:mod:`~pyprobvae.runs.writers`).
"""

from . import verbs
from .folder import DataConfig, Run, RunConfig, read_config, write_config
from .writers import write_examples, write_json

__all__ = ["DataConfig", "Run", "RunConfig", "read_config", "verbs", "write_config", "write_examples", "write_json"]
