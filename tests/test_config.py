"""Config: one place, a settings table, environment overrides, one clear line when wrong."""

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import NON_SETTING_VARIABLES, SETTINGS, ConfigError, load_config

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def write(tmp_path, text):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_config_defaults_without_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(environ={})
    assert config["gateway.port"] == 8080 and config["gateway.host"] == "127.0.0.1"
    assert config["ussd.resume_minutes"] == 5 and config["language.default"] == "id"
    assert config.source is None


def test_config_file_then_environment(tmp_path):
    path = write(tmp_path, "gateway:\n  port: 9000\nussd:\n  resume_minutes: 3\n")
    config = load_config(path, environ={"KENTONGAN_GATEWAY_PORT": "9100"})
    assert config["gateway.port"] == 9100 and config["ussd.resume_minutes"] == 3


def test_config_environment_list(tmp_path):
    config = load_config(write(tmp_path, ""), environ={"KENTONGAN_LANGUAGE_AVAILABLE": "en, sw",
                                                       "KENTONGAN_LANGUAGE_DEFAULT": "sw"})
    assert config["language.available"] == ("en", "sw")


@pytest.mark.parametrize("text, environ, message", [
    ("gateway:\n  prot: 1\n", {}, "unknown key 'gateway.prot' (did you mean 'gateway.port'?)"),
    ("gateway:\n  port: eighty\n", {}, "gateway.port: expected a whole number from 1 to 65535 (got 'eighty')"),
    ("gateway:\n  port: 70000\n", {}, "gateway.port: expected a whole number"),
    ("", {"KENTONGAN_GATEWAY_PORT": "x"}, "KENTONGAN_GATEWAY_PORT: expected a whole number"),
    ("gateway:\n  ref_prefix: K0\n", {}, "gateway.ref_prefix: may only use"),
    ("gateway:\n  ref_prefix: KKKK\n", {}, "gateway.ref_prefix: must be 1 to 3 characters"),
    ("language:\n  default: fr\n", {}, "language.default: 'fr' is not in language.available"),
    ("language:\n  available: []\n", {}, "language.available: expected a list of names, like [id, en, sw]"),
    ("gateway: [1, 2\n", {}, "not valid YAML"),
    ("- 1\n", {}, "expected sections"),
])
def test_config_bad_value_names_the_key(tmp_path, text, environ, message):
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), environ=environ)
    assert message in str(caught.value)


def test_config_named_file_must_exist(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.yaml", environ={})


def test_config_every_setting_has_help_and_parses_its_default():
    for setting in SETTINGS:
        assert setting.help.endswith(".")
        setting.parse(setting.default)


def test_config_cli_prints_one_line_and_exits_2(tmp_path):
    path = write(tmp_path, "gateway:\n  port: eighty\n")
    result = subprocess.run([sys.executable, "-m", "gateway", "serve", "--config", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr == ("kentongan: config error: gateway.port: expected a whole number "
                             "from 1 to 65535 (got 'eighty')\n")


def test_config_nested_keys_and_their_environment_names(tmp_path):
    path = write(tmp_path, "sms:\n  provider: africastalking\n  africastalking:\n    username: desa\n")
    config = load_config(path, environ={"KENTONGAN_SMS_AFRICASTALKING_API_KEY": "k",
                                        "KENTONGAN_CENTRAL_EMBEDDED": "yes"})
    assert config["sms.provider"] == "africastalking" and config["sms.africastalking.username"] == "desa"
    assert config["sms.africastalking.api_key"] == "k" and config["central.embedded"] is True


def test_config_errors_never_echo_secrets(tmp_path):
    path = write(tmp_path, "central:\n  staff_token: [hunter2]\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert "central.staff_token" in str(caught.value) and "hunter2" not in str(caught.value)


@pytest.mark.parametrize("text, message", [
    ("sms:\n  provider: carrier-pigeon\n", "sms.provider: expected one of console, africastalking"),
    ("central:\n  url: ftp://x\n", "central.url: expected an http:// or https:// URL"),
    ("central:\n  embedded: maybe\n", "central.embedded: expected true or false"),
])
def test_config_checks_sms_and_central_keys(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text), environ={})


def test_config_unknown_variable_stops_with_a_hint(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, ""), environ={"KENTONGAN_GATEWAY_PORTT": "9090"})
    assert str(caught.value) == "KENTONGAN_GATEWAY_PORTT: unknown setting (did you mean KENTONGAN_GATEWAY_PORT?)"


def test_config_unknown_variable_without_a_close_name(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, ""), environ={"KENTONGAN_XYZZY": "1"})
    assert str(caught.value) == "KENTONGAN_XYZZY: unknown setting"


def test_config_unknown_variable_is_checked_without_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="^KENTONGAN_SYNC_SECRT: unknown setting"):
        load_config(environ={"KENTONGAN_SYNC_SECRT": "s"})


def test_config_unknown_variable_hint_covers_the_non_settings(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, ""), environ={"KENTONGAN_REQUIRE_SERVICE": "1"})
    assert str(caught.value).endswith("(did you mean KENTONGAN_REQUIRE_SERVICES?)")


def test_config_other_variables_are_not_checked(tmp_path):
    config = load_config(write(tmp_path, ""), environ={"KENTONGANX": "1", "kentongan_gateway_portt": "1",
                                                       "PATH": "/bin", "GATEWAY_PORTT": "1"})
    assert config["gateway.port"] == 8080


def test_config_non_setting_variables_are_allowed(tmp_path):
    assert set(NON_SETTING_VARIABLES) == {"KENTONGAN_REQUIRE_SERVICES", "KENTONGAN_REQUIRE_BROWSER",
                                          "KENTONGAN_REGEN_TRANSCRIPTS", "KENTONGAN_FUZZ"}
    config = load_config(write(tmp_path, ""), environ={name: "1" for name in NON_SETTING_VARIABLES})
    assert config["gateway.port"] == 8080


def test_config_non_setting_variables_are_documented():
    configuration = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    missing = [name for name in NON_SETTING_VARIABLES if f"`{name}" not in configuration]
    assert not missing
    assert not set(NON_SETTING_VARIABLES) & {setting.env for setting in SETTINGS}


def test_config_require_file_without_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_config(environ={}, require_file=True)
    message = str(caught.value)
    assert message == (f"no config file: looked for {tmp_path.absolute() / 'config.yaml'}; "
                       "pass --config PATH or run from the folder that has config.yaml")
    assert "\n" not in message


def test_config_require_file_with_the_default_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "gateway:\n  port: 9000\n")
    config = load_config(environ={}, require_file=True)
    assert config["gateway.port"] == 9000
    assert config.source == tmp_path.absolute() / "config.yaml" and config.source.is_absolute()


def test_config_require_file_with_a_named_file(tmp_path):
    path = write(tmp_path, "")
    assert load_config(path, environ={}, require_file=True).source == path.absolute()
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.yaml", environ={}, require_file=True)


def test_config_defaults_without_a_file_even_with_variables(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(environ={"KENTONGAN_GATEWAY_PORT": "9100"})
    assert config.source is None and config["gateway.port"] == 9100


def test_config_source_is_absolute_for_a_relative_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "site").mkdir()
    write(tmp_path / "site", "")
    assert load_config("site/config.yaml", environ={}).source == tmp_path.absolute() / "site" / "config.yaml"


def test_config_unreadable_file_is_one_line(tmp_path):
    (tmp_path / "config.yaml").mkdir()
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "config.yaml", environ={})
    assert "cannot read" in str(caught.value) and "\n" not in str(caught.value)


def test_config_list_in_a_variable(tmp_path):
    config = load_config(write(tmp_path, "language:\n  available: [id]\n"),
                         environ={"KENTONGAN_LANGUAGE_AVAILABLE": "id,en",
                                  "KENTONGAN_CENTRAL_OPEN311_SERVICES": "report, status"})
    assert config["language.available"] == ("id", "en")
    assert config["central.open311_services"] == ("report", "status")
