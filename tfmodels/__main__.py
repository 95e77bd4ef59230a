"""``python -m tfmodels``: the same as the ``tfmodels`` command."""

from tfmodels.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
