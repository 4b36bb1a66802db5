"""The one-command demo's inputs, built by the project's own code the first time `eval --demo` or `probe --demo` needs
them: tiny random checkpoints and their tokenizers (`builders.py`) and small datasets in each domain's publisher
format (`datasets.py`). They are fixtures for trying the tool, not part of the evaluation (`multinet_jax.eval`), which
runs the same way on them as on real checkpoints and data.
"""

from multinet_jax.demo.builders import (DEMO_PARAM_SCALE, DEMO_SEED, DEMO_VOCAB_SIZE, build, build_checkpoint,
                                        build_probe_demo, build_tokenizer)

__all__ = ["DEMO_PARAM_SCALE", "DEMO_SEED", "DEMO_VOCAB_SIZE", "build", "build_checkpoint", "build_probe_demo",
           "build_tokenizer"]
