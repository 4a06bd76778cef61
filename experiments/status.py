"""Where a run stands: rounds done, pool counts, the cases waiting for annotators (and
where their label files are expected), the last Dice.

  python -m experiments.status WORKDIR

Reads the workdir's JSON and CSV files only (see assft_jax/deploy/status.py).
Exit codes: 0 printed; 1 WORKDIR holds no run.
"""

from __future__ import annotations

from absl import app

from assft_jax import errors


def main(argv):
  if len(argv) != 2:
    raise app.UsageError("usage: python -m experiments.status WORKDIR")
  with errors.cli_errors():
    from assft_jax.deploy import status

    print(status.format_status(status.read_status(argv[1])))


if __name__ == "__main__":
  app.run(main)
