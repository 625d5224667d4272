"""Runtime: what every stage needs from the machine and the tools, and nothing about MRI or models.

Owns the one atomic writer (``files``), signal handling and dying with ``dvc`` (``interrupts``), worker
processes (``workers``), OpenBLAS kernel pinning (``blas``) and the CPU's flags (``cpu``), a stage's one-line
error handling (``stage``), the torch device and precision policy (``device``) and the offline ``dvc plots``
template (``offline_plots``). May import only :mod:`gliomil.errors` and itself.
"""
