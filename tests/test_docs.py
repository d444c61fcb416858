"""The README documents every setting and every command."""

from pathlib import Path

from gateway.cli import main
from gateway.config import SETTINGS

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_docs_every_setting_is_in_the_readme():
    missing = [s.name for s in SETTINGS if f"`{s.name}`" not in README]
    assert not missing


def test_docs_every_command_is_in_the_readme():
    names = []
    for name, command in main.commands.items():
        subcommands = getattr(command, "commands", None)
        names += [f"{name} {sub}" for sub in subcommands] if subcommands else [name]
    missing = [name for name in names if f"`kentongan {name}" not in README]
    assert not missing


def test_docs_setup_is_make_run_and_make_test():
    setup = README.split("## Set-up", 1)[1].split("##", 1)[0]
    assert "make run" in setup and "make test" in setup
