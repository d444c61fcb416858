"""`kentongan operator ...` and `kentongan central staff ...`, through click's runner on real stores."""

import logging

import pytest
from click.testing import CliRunner

from gateway.cli import main
from sync.accounts import digest, verify_password
from sync.central.store import CentralStore
from sync.store import Store

PASSWORD = "secret-pass"


@pytest.fixture(autouse=True)
def logging_kept():
    """The command sets up logging for a process of its own: give this process's set-up back."""
    root, transitions = logging.getLogger(), logging.getLogger("transitions")
    handlers, level, transitions_level = root.handlers[:], root.level, transitions.level
    yield
    root.handlers[:], root.level = handlers, level
    transitions.setLevel(transitions_level)


@pytest.fixture
def folder(tmp_path):
    """A config file with the data under tmp_path/var, and a gateway store there."""
    (tmp_path / "config.yaml").write_text(f"gateway:\n  data_dir: {str(tmp_path / 'var')!r}\n")
    Store.open(tmp_path / "var").close()
    return tmp_path


def kentongan(folder, *args, input=None):
    return CliRunner().invoke(main, [*args, "--config", str(folder / "config.yaml")], input=input)


def opened(store_class, folder):
    return store_class.open(folder / "var")


def test_cli_accounts_operator_add_asks_for_the_password_twice_on_standard_input(folder):
    result = kentongan(folder, "operator", "add", "ani", "--role", "supervisor", input=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert "operator ani added with role supervisor" in result.stdout
    assert PASSWORD not in result.output  # typed hidden
    store = opened(Store, folder)
    try:
        account = store.accounts.account("ani")
        assert account["role"] == "supervisor" and verify_password(account["password_hash"], PASSWORD)
        assert [(row["who"], row["action"], row["target"]) for row in store.accounts.audit_log()] == [
            ("cli", "account-add", "ani")]
    finally:
        store.close()


def test_cli_accounts_operator_prompt_refuses_two_different_passwords(folder):
    result = kentongan(folder, "operator", "add", "ani", "--role", "operator", input=f"{PASSWORD}\nother-pass\n")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "kentongan: no password: give --password, or type it when asked"]
    assert "ani" not in kentongan(folder, "operator", "list").stdout


def test_cli_accounts_operator_list_and_disable(folder):
    for name, role in (("ani", "operator"), ("budi", "admin")):
        added = kentongan(folder, "operator", "add", name, "--role", role, "--password", PASSWORD)
        assert added.exit_code == 0, added.output
    store = opened(Store, folder)
    try:
        token, _ = store.accounts.start_session("ani")
        password_hash = store.accounts.account("ani")["password_hash"]
    finally:
        store.close()

    disabled = kentongan(folder, "operator", "disable", "ani")
    assert disabled.exit_code == 0, disabled.output
    assert disabled.stdout.startswith("operator ani disabled since ")
    listed = kentongan(folder, "operator", "list")
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["name", "role", "created", "last", "sign-in", "disabled"]
    assert lines[1].split()[:2] == ["ani", "operator"] and lines[1].split()[-2] == "never"
    assert lines[1].split()[-1] != "-" and lines[2].split()[-1] == "-"
    assert lines[2].split()[:2] == ["budi", "admin"] and len(lines) == 3
    assert password_hash not in listed.output and "argon2" not in listed.output

    store = opened(Store, folder)
    try:
        assert store.accounts.session(token) is None
        assert [row["action"] for row in store.accounts.audit_log()] == ["account-disable", "account-add",
                                                                         "account-add"]
    finally:
        store.close()


@pytest.mark.parametrize("args, message", [
    (("operator", "add", "ani", "--role", "boss", "--password", PASSWORD),
     "kentongan: unknown role 'boss': the gateway roles are operator, supervisor, admin"),
    (("operator", "add", "ani", "--role", "operator", "--password", "short"),
     "kentongan: the password is too short: at least 10 characters"),
    (("operator", "add", "a b", "--role", "operator", "--password", PASSWORD),
     "kentongan: bad account name 'a b': 1-40 letters, digits and . _ @ -"),
    (("operator", "add", "ANI", "--role", "operator", "--password", PASSWORD),
     "kentongan: an account named ani exists already"),
    (("operator", "disable", "nobody"), "kentongan: no account named nobody"),
    (("central", "staff", "add", "x", "--role", "operator", "--agency", "Dinas PU", "--password", PASSWORD),
     "kentongan: unknown role 'operator': the central roles are viewer, staff, supervisor, admin"),
    (("central", "staff", "disable", "nobody"), "kentongan: no account named nobody"),
    (("central", "staff", "token", "nobody"), "kentongan: no account named nobody"),
])
def test_cli_accounts_bad_input_is_one_line_and_exit_2(folder, args, message):
    assert kentongan(folder, "operator", "add", "ani", "--role", "operator", "--password", PASSWORD).exit_code == 0
    result = kentongan(folder, *args)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [message]


def test_cli_accounts_operator_commands_need_the_gateway_store(tmp_path):
    (tmp_path / "config.yaml").write_text(f"gateway:\n  data_dir: {str(tmp_path / 'var')!r}\n")
    result = kentongan(tmp_path, "operator", "add", "ani", "--role", "operator", "--password", PASSWORD)
    assert result.exit_code == 2
    assert result.stderr.startswith("kentongan: no gateway store in ")
    assert not (tmp_path / "var").exists()


def test_cli_accounts_central_staff_add_list_token_disable(folder):
    added = kentongan(folder, "central", "staff", "add", "budi", "--role", "staff", "--agency", "Dinas PU",
                      input=f"{PASSWORD}\n{PASSWORD}\n")
    assert added.exit_code == 0, added.output
    assert "staff budi added with role staff, agency Dinas PU" in added.stdout

    issued = kentongan(folder, "central", "staff", "token", "budi", "--label", "spreadsheet")
    assert issued.exit_code == 0, issued.output
    token = issued.stdout.splitlines()[1].strip()
    assert token.startswith("kt_")
    assert "It will not be shown again" in issued.stdout

    listed = kentongan(folder, "central", "staff", "list")
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["name", "role", "agency", "created", "last", "sign-in", "disabled"]
    assert lines[1].startswith("budi") and "Dinas PU" in lines[1] and token not in listed.output

    central = opened(CentralStore, folder)
    try:
        assert central.accounts.token_account(token)["name"] == "budi"
        assert central.db.execute("SELECT count(*) FROM account_tokens WHERE digest = ?",
                                  [digest(token)]).fetchone()[0] == 1
    finally:
        central.close()

    assert kentongan(folder, "central", "staff", "disable", "budi").exit_code == 0
    refused = kentongan(folder, "central", "staff", "token", "budi")
    assert refused.exit_code == 2 and refused.stderr.strip() == "kentongan: account budi is disabled"
    central = opened(CentralStore, folder)
    try:
        assert central.accounts.token_account(token) is None
        assert [(row["who"], row["action"], row["target"], row["detail"]) for row in central.accounts.audit_log()] == [
            ("cli", "account-disable", "budi", ""), ("cli", "token-issue", "budi", "spreadsheet"),
            ("cli", "account-add", "budi", "role staff, agency Dinas PU")]
    finally:
        central.close()


def test_cli_accounts_lists_say_how_to_begin_when_empty(folder):
    assert kentongan(folder, "operator", "list").stdout == (
        "no accounts yet: kentongan operator add NAME --role ROLE\n")
    assert kentongan(folder, "central", "staff", "list").stdout == (
        "no accounts yet: kentongan central staff add NAME --role ROLE --agency A\n")
