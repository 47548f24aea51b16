"""``python -m twotower``: the ``twotower`` command (e.g. where the venv's scripts are not
on ``PATH``)."""

from twotower.cli import run

if __name__ == "__main__":
    run()
