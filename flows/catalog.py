"""Catalogs: every word a caller sees, per language, from `locale/`.

Message ids are symbolic (`report.location.prompt`), so a missing translation
shows up as a failed check instead of a silent fall-back to English. Catalogs
are gettext `.mo` files that the build compiles from the `.po` files with
`pybabel compile`; when a `.mo` is missing or older than its `.po` (a
developer just edited it), the `.po` is compiled in memory instead.

`extract_menus` is a babel extractor for the menu files, named in
`babel.cfg`, so that `pybabel extract` finds the ids in `menus/*.yaml`.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any, Iterator

import yaml
from babel import Locale
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

from .errors import CatalogError

log = logging.getLogger(__name__)

DOMAIN = "messages"

MESSAGE_KEYS = ("text", "label", "title", "sms_word", "keyword", "usage")
"""Keys of a menu file whose values are catalog message ids."""


def N_(msgid: str) -> str:
    """Mark a message id for `pybabel extract`; translated later, per session language."""
    return msgid


class Catalog:
    """Translations for each configured language, bound per call, never globally."""

    def __init__(self, translations: dict[str, Translations]):
        self._translations = translations
        self.languages = tuple(translations)

    @classmethod
    def load(cls, locale_dir: str | Path, languages: list[str] | tuple[str, ...]) -> "Catalog":
        """Read `<locale_dir>/<lang>/LC_MESSAGES/messages.mo` (or `.po`) for every language."""
        root = Path(locale_dir)
        found = {}
        for lang in languages:
            found[lang] = _load_one(root / lang / "LC_MESSAGES", lang)
        return cls(found)

    def translations(self, lang: str) -> Translations:
        """`lang`'s gettext catalog, for what renders words itself (the web pages' templates)."""
        return self._translations[lang]

    def has(self, lang: str, msgid: str) -> bool:
        """True when `lang` translates `msgid` (to something other than the id itself)."""
        translated = self._translations[lang].gettext(msgid)
        return bool(translated) and translated != msgid

    def text(self, lang: str, msgid: str, **values: Any) -> str:
        """The message `msgid` in `lang`, with `{name}` placeholders filled from `values`.

        A placeholder without a value becomes empty: an answer the caller's
        branch never asked for (`{kind_other}` when the kind was not "other").
        """
        template = self._translations[lang].gettext(msgid)
        if "{" not in template:
            return template
        try:
            return template.format_map(_Blank(values))
        except (IndexError, ValueError, AttributeError):
            log.error("catalog %s: message %r has a malformed placeholder", lang, msgid)
            return template

    def language_name(self, lang: str) -> str:
        """The language's own name for itself, from babel's CLDR data."""
        return Locale.parse(lang).get_display_name(lang)


class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return ""


def _load_one(folder: Path, lang: str) -> Translations:
    po = folder / f"{DOMAIN}.po"
    mo = folder / f"{DOMAIN}.mo"
    if mo.exists() and (not po.exists() or mo.stat().st_mtime >= po.stat().st_mtime):
        with mo.open("rb") as handle:
            return Translations(handle, domain=DOMAIN)
    if not po.exists():
        raise CatalogError(f"no catalog for language {lang!r}: {po} is missing")
    log.warning("catalog %s: %s is missing or stale, compiling %s in memory", lang, mo.name, po)
    with po.open("rb") as handle:
        catalog = read_po(handle, locale=lang, domain=DOMAIN)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return Translations(buffer, domain=DOMAIN)


def extract_menus(fileobj, keywords, comment_tags, options) -> Iterator[tuple[int, str | None, str, list[str]]]:
    """Babel extractor: yield every message id a menu file uses, with its line number."""
    root = yaml.compose(fileobj)
    stack = [root] if root is not None else []
    found = []
    while stack:
        node = stack.pop()
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value in MESSAGE_KEYS and isinstance(value, yaml.ScalarNode):
                    found.append((value.start_mark.line + 1, None, value.value, [f"menu key: {key.value}"]))
                else:
                    stack.append(value)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
    yield from sorted(found)
