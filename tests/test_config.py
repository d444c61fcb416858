"""Config: one place, a settings table, environment overrides, one clear line when wrong."""

import subprocess
import sys

import pytest

from gateway.config import SETTINGS, ConfigError, load_config


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
