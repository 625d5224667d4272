"""First import of every stage: this checkout's code, and a stage that stops when it should, from its first moment.

DVC runs queued experiments (`dvc exp run --queue`, `dvc queue start`) in copies of the repository under
.dvc/tmp/exps/. An editable install would point every copy at the main working tree, so an experiment
would run whatever code is there when it starts, not the code it was queued with: src/ goes first on sys.path.

Then, before the seconds that importing torch takes, the stage asks to die with `dvc` and starts recording
SIGINT/SIGTERM (gliomil.runtime.interrupts): a `dvc` killed, or a Ctrl-C, during the imports is not missed.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from gliomil.runtime import interrupts  # noqa: E402

interrupts.die_with_parent()
interrupts.install()
