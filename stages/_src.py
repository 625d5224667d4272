"""Put this checkout's src/ first on sys.path, so a stage runs the gliomil code beside it.

DVC runs queued experiments (`dvc exp run --queue`, `dvc queue start`) in copies of the repository under
.dvc/tmp/exps/. An editable install would point every copy at the main working tree, so an experiment
would run whatever code is there when it starts, not the code it was queued with.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
