"""``run(capsys, *argv)``: the CLI's exit code and captured stdout/stderr (the CLI tests')."""

from twotower.cli import main


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err
