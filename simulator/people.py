"""Who the simulated users are: names (a few non-ASCII and CJK on purpose), guest domains, service
accounts, departments, offices, and the traits a user derives from its digest alone.
"""

from __future__ import annotations

import unicodedata
from typing import NamedTuple

from .seeded import digest

_ASCII_FOLD = str.maketrans(
    {"ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "ß": "ss", "đ": "d", "Đ": "D", "æ": "ae", "Æ": "AE"}
)


def _ascii(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text.translate(_ASCII_FOLD))
    return "".join(c for c in folded if c.isascii() and (c.isalnum() or c in "'-")).lower()


# (display name, ascii form or None to derive); a few non-ASCII and CJK names on purpose.
FIRST_NAMES: tuple[tuple[str, str | None], ...] = (
    ("Adele", None),
    ("Alex", None),
    ("Allan", None),
    ("Bianca", None),
    ("Brian", None),
    ("Christie", None),
    ("Debra", None),
    ("Diego", None),
    ("Emily", None),
    ("Enrico", None),
    ("Grady", None),
    ("Henrietta", None),
    ("Irvin", None),
    ("Isaiah", None),
    ("Johanna", None),
    ("Joni", None),
    ("Lee", None),
    ("Lidia", None),
    ("Lynne", None),
    ("Megan", None),
    ("Miriam", None),
    ("Nestor", None),
    ("Patti", None),
    ("Pradeep", None),
    ("José", None),
    ("Zoë", None),
    ("Björn", None),
    ("Łukasz", None),
    ("Søren", None),
    ("François", None),
    ("Chloé", None),
    ("Ærin", None),
    ("Dương", None),
    ("Ana-María", None),
    ("Jean-Luc", None),
    ("Siobhán", None),
    ("Mohammed", None),
    ("Fatima", None),
    ("Olumide", None),
    ("Kenji", None),
    ("Priya", None),
    ("Mateo", None),
    ("伟", "wei"),
    ("芳", "fang"),
    ("Ирина", "irina"),
    ("Дмитрий", "dmitriy"),
    ("Noa", None),
    ("Ingrid", None),
)
LAST_NAMES: tuple[tuple[str, str | None], ...] = (
    ("Vance", None),
    ("Wilber", None),
    ("Deyoung", None),
    ("Pinchon", None),
    ("Johnson", None),
    ("Cline", None),
    ("Berg", None),
    ("Siciliani", None),
    ("Braun", None),
    ("Gallo", None),
    ("Archie", None),
    ("Cox", None),
    ("Muller", None),
    ("Sherman", None),
    ("Lauer", None),
    ("Beaudoin", None),
    ("Gu", None),
    ("Holloway", None),
    ("Robbins", None),
    ("Bowen", None),
    ("Hunter", None),
    ("Kelley", None),
    ("Fernandez", None),
    ("Gupta", None),
    ("Müller", None),
    ("García", None),
    ("Øvergaard", None),
    ("Wójcik", None),
    ("Nguyễn", None),
    ("O'Brien", None),
    ("D'Angelo", None),
    ("Smith-Jones", None),
    ("van der Berg", None),
    ("Strauß", None),
    ("Ó Súilleabháin", None),
    ("Okafor", None),
    ("Tanaka", None),
    ("Haddad", None),
    ("Kowalski", None),
    ("Rossi", None),
    ("Silva", None),
    ("王", "wang"),
    ("李", "li"),
    ("Иванова", "ivanova"),
    ("Смирнов", "smirnov"),
    ("Cohen", None),
    ("Larsen", None),
    ("'t Hooft", None),
    ("de Vries", None),
)
FIRST_NAME_FORMS = tuple((d, a or _ascii(d)) for d, a in FIRST_NAMES)
LAST_NAME_FORMS = tuple((d, (a or _ascii(d)).replace(" ", "")) for d, a in LAST_NAMES)
GUEST_DOMAINS = ("gmail.com", "outlook.com", "hotmail.co.uk", "partner.example", "yahoo.co.jp", "proton.me")
SERVICE_ACCOUNTS = (
    "svc-backup",
    "svc_sql",
    "room.",
    "scan-to-mail",
    "noreply",
    "helpdesk",
    "_svc-sync",
    "_breakglass",
    "kiosk-",
)
DEPARTMENTS: dict[str, tuple[str, ...]] = {
    "Sales": ("Account Executive", "Sales Manager", "Inside Sales Representative"),
    "Marketing": ("Marketing Manager", "Content Strategist", "Brand Designer"),
    "Engineering": ("Software Engineer", "Senior Software Engineer", "Engineering Manager", "SRE"),
    "Finance": ("Accountant", "Financial Analyst", "Controller"),
    "Human Resources": ("HR Generalist", "Recruiter", "HR Director"),
    "IT": ("IT Administrator", "Helpdesk Technician", "Security Analyst"),
    "Legal": ("Counsel", "Paralegal"),
    "Operations": ("Operations Manager", "Logistics Coordinator", "Facilities Specialist"),
    "Recherche & Développement": ("Ingénieur R&D", "Chef de projet"),
}
# (officeLocation, city, state, country, usageLocation, postalCode, street, phone prefix, preferredLanguage)
OFFICES = (
    ("Redmond 18/2116", "Redmond", "WA", "United States", "US", "98052", "One Microsoft Way", "+1 425 555 ", "en-US"),
    ("New York 5/510", "New York", "NY", "United States", "US", "10001", "11 Times Square", "+1 212 555 ", "en-US"),
    ("London 3.14", "London", None, "United Kingdom", "GB", "EC2A 2BB", "2 Kingdom Street", "+44 20 7946 ", "en-GB"),
    (
        "Paris La Défense",
        "Paris",
        None,
        "France",
        "FR",
        "92130",
        "39 Quai du Président Roosevelt",
        "+33 1 70 ",
        "fr-FR",
    ),
    (
        "München Schwabing",
        "München",
        "BY",
        "Germany",
        "DE",
        "80807",
        "Walter-Gropius-Straße 5",
        "+49 89 3176 ",
        "de-DE",
    ),
    ("Tokyo Shinagawa", "東京", None, "Japan", "JP", "108-0075", "2-16-3 Konan", "+81 3 4332 ", "ja-JP"),
    (
        "São Paulo",
        "São Paulo",
        "SP",
        "Brazil",
        "BR",
        "04543-907",
        "Av. Pres. Juscelino Kubitschek 1909",
        "+55 11 5504 ",
        "pt-BR",
    ),
    ("Remote", None, None, None, "US", None, None, None, None),
)
DEPARTMENT_NAMES = tuple(DEPARTMENTS)

KIND_MEMBER, KIND_GUEST, KIND_SERVICE = 0, 1, 2


class UserTraits(NamedTuple):
    """Everything about a user that is derived from its digest alone (no index needed)."""

    kind: int
    first: tuple[str, str]
    last: tuple[str, str]
    style: int
    domain: int
    combo: tuple[str, ...]
    digest: bytes


def user_kind(seed: int, index: int) -> int:
    """Member, guest or service account: the same draw as the tenant's (from the user's digest)."""
    d = digest(seed, f"user:{index}")
    return KIND_GUEST if d[4] < 14 else KIND_SERVICE if d[4] < 18 else KIND_MEMBER
