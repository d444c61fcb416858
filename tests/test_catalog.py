"""The catalogs: complete, consistent, renderable on a handset, and in step with the menus."""

import re
import string

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

from flows import CatalogError, Engine
from flows.catalog import Catalog
from flows.text import is_gsm7
from gateway.config import data_root

ROOT = data_root()
LANGUAGES = ["id", "en", "sw"]


def catalog(lang):
    with open(ROOT / "locale" / lang / "LC_MESSAGES" / "messages.po", "rb") as handle:
        return read_po(handle, locale=lang)


def template_ids():
    with open(ROOT / "locale" / "messages.pot", "rb") as handle:
        return {m.id for m in read_po(handle) if m.id}


def placeholders(text):
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_catalog_template_matches_what_code_and_menus_use():
    with open(ROOT / "babel.cfg") as handle:
        method_map, options_map = parse_mapping_cfg(handle)
    found = {message for _, _, message, _, _ in extract_from_dir(str(ROOT), method_map, options_map)
             if isinstance(message, str)}
    assert found == template_ids(), "run `make catalogs` and translate what it adds"


def test_catalog_every_page_message_id_in_the_code_is_extracted():
    """A page's message id passed to gettext without an N_ marker is never extracted, so `make catalogs`
    drops its translations and the page shows the bare id."""
    written = set()
    for folder in ("gateway", "sync"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".py", ".html", ".js"):
                written |= set(re.findall(r"[\"'](web\.[a-z_]+(?:\.[a-z_]+)+)[\"']", path.read_text()))
    assert written - template_ids() == set()


@pytest.mark.parametrize("lang", LANGUAGES)
def test_catalog_translates_every_message(lang):
    messages = {m.id: m for m in catalog(lang) if m.id}
    missing = template_ids() - {i for i, m in messages.items() if m.string and not m.fuzzy}
    assert not missing, f"{lang} lacks {sorted(missing)}"


@pytest.mark.parametrize("lang", LANGUAGES)
def test_catalog_placeholders_match_default_language(lang):
    reference = {m.id: placeholders(m.string) for m in catalog("id") if m.id}
    for message in catalog(lang):
        if message.id:
            assert placeholders(message.string) == reference[message.id], f"{lang} {message.id}"


@pytest.mark.parametrize("lang", LANGUAGES)
def test_catalog_only_gsm7_characters(lang):
    for message in catalog(lang):
        assert is_gsm7(message.string), f"{lang} {message.id}: {message.string!r} is not GSM-7"


def test_catalog_engine_refuses_incomplete_catalog(tmp_path):
    for lang in LANGUAGES:
        folder = tmp_path / lang / "LC_MESSAGES"
        folder.mkdir(parents=True)
        text = (ROOT / "locale" / lang / "LC_MESSAGES" / "messages.po").read_text()
        if lang == "sw":
            text = text.replace('msgid "voter.already"', 'msgid "voter.already.renamed"')
        (folder / "messages.po").write_text(text)
    with pytest.raises(CatalogError, match="'sw' lacks 1 message.*voter.already"):
        Engine.load(ROOT / "menus", tmp_path, LANGUAGES, "id")


def test_catalog_missing_language_is_an_error(tmp_path):
    with pytest.raises(CatalogError, match="no catalog for language 'fr'"):
        Catalog.load(ROOT / "locale", ["id", "fr"])


def test_catalog_compiled_mo_is_used_when_fresh(tmp_path):
    folder = tmp_path / "en" / "LC_MESSAGES"
    folder.mkdir(parents=True)
    po = (ROOT / "locale" / "en" / "LC_MESSAGES" / "messages.po").read_text()
    (folder / "messages.po").write_text(po)
    from babel.messages.mofile import write_mo
    with open(folder / "messages.po", "rb") as handle:
        compiled = read_po(handle, locale="en")
    compiled.get("nav.more").string = "Onward"
    with open(folder / "messages.mo", "wb") as handle:
        write_mo(handle, compiled)
    assert Catalog.load(tmp_path, ["en"]).text("en", "nav.more") == "Onward"
    (folder / "messages.po").write_text(po)  # now newer than the .mo: the .po wins
    import os
    os.utime(folder / "messages.mo", (1, 1))
    assert Catalog.load(tmp_path, ["en"]).text("en", "nav.more") == "Next"


@pytest.mark.parametrize("lang", LANGUAGES)
def test_catalog_screen_placeholders_name_answers_of_their_flow(lang):
    engine = Engine.load(ROOT / "menus", ROOT / "locale", LANGUAGES, "id")
    messages = {m.id: m.string for m in catalog(lang) if m.id}
    for flow, screen in engine.walk():
        known = {s.save for s in flow.screens.values() if s.save} | {"ref"}
        unknown = placeholders(messages[screen.text]) - known
        assert not unknown, f"{lang} {screen.text} uses {unknown}, which {flow.name} never asks"
