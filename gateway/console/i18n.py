"""Console languages: Vietnamese first, English switchable (gettext catalogs read with Babel).

Why catalogs rather than two sets of templates: one template per page, every
string marked once (``{{ _("...") }}``), and a test checks that the Vietnamese
catalog translates every string the templates use.  The message ids are English;
``locale/vi/LC_MESSAGES/messages.po`` holds the Vietnamese.  Catalogs are read
from the ``.po`` source at start (Babel), so no compiled ``.mo`` file is kept in
the repository or built by the setup.  Dates and times are shown in Vietnam time
(Asia/Ho_Chi_Minh, UTC+7, no daylight saving) as ``dd/mm/yyyy HH:MM``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from zoneinfo import ZoneInfo

from babel.messages.pofile import read_po

from consent import PURPOSE_LABELS

LANGUAGES = ("vi", "en")
DEFAULT_LANGUAGE = "vi"
LANGUAGE_COOKIE = "cb_lang"
VIETNAM = ZoneInfo("Asia/Ho_Chi_Minh")
_LOCALE_DIR = Path(__file__).resolve().parent / "locale"


def load_catalog(language: str) -> Mapping[str, str]:
    """msgid → translation for ``language`` (English: empty, the ids are English), read-only.

    The ``.po`` file is parsed once per process and shared by every app and page.
    """
    return MappingProxyType(_read_catalog(language))


@lru_cache(maxsize=len(LANGUAGES))
def _read_catalog(language: str) -> dict[str, str]:
    path = _LOCALE_DIR / language / "LC_MESSAGES" / "messages.po"
    if language == "en" or not path.exists():
        return {}
    with path.open("rb") as handle:
        catalog = read_po(handle, locale=language)
    found = {str(m.id): str(m.string) for m in catalog if m.id and isinstance(m.id, str) and m.string}
    # purposes are named once, bilingual, for the patient's letter (consent.PURPOSE_LABELS)
    for bilingual in PURPOSE_LABELS.values():
        vietnamese, _, english = bilingual.rpartition(" / ")
        found[english] = vietnamese
    return found


def pick_language(cookie: str | None) -> str:
    return cookie if cookie in LANGUAGES else DEFAULT_LANGUAGE


def local_time(instant_us: int | None) -> str:
    """``dd/mm/yyyy HH:MM`` in Vietnam time; an empty string for no time."""
    if not instant_us:
        return ""
    moment = dt.datetime.fromtimestamp(instant_us / 1e6, tz=VIETNAM)
    return moment.strftime("%d/%m/%Y %H:%M")
