"""Grant codes: random, unguessable, and easy to read out at a till.

A code is 12 symbols from a 32-symbol alphabet without 0, O, 1 and I,
written in groups of four, e.g. ``K7QM-3XPD-9HTR``: 60 random bits from
``secrets``. Guessing one valid code among a million issued ones takes about
10^12 tries on average.
"""

from __future__ import annotations

import secrets

ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
GROUPS = 3
GROUP_LENGTH = 4
CODE_LENGTH = GROUPS * GROUP_LENGTH


def new_code() -> str:
    """Return a fresh random code such as ``K7QM-3XPD-9HTR``."""
    symbols = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
    return _group(symbols)


def normalize_code(raw: str) -> str:
    """Return ``raw`` in stored form: upper case, grouped by four with hyphens.

    Spaces, hyphens and letter case are ignored, so "k7qm 3xpd 9htr" and
    "K7QM3XPD9HTR" both become "K7QM-3XPD-9HTR". Text that cannot be a code
    is returned upper-cased without grouping, so it matches nothing.
    """
    symbols = "".join(raw.split()).replace("-", "").upper()
    if len(symbols) != CODE_LENGTH:
        return symbols
    return _group(symbols)


def _group(symbols: str) -> str:
    return "-".join(
        symbols[start : start + GROUP_LENGTH]
        for start in range(0, CODE_LENGTH, GROUP_LENGTH)
    )
