"""Short references a villager can read out, type and keep: `K7M2QXA`.

A reference is the gateway's prefix (1-3 characters, assigned when the
gateway is registered with the central backend) and five random characters,
so gateways never coordinate and still never collide. The alphabet leaves out
0/O, 1/I/L: what a caller copies from a screen cannot be misread.
"""

from __future__ import annotations

import secrets

ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
RANDOM_LENGTH = 5
MIN_LENGTH = 6
MAX_LENGTH = 8


def check_prefix(prefix: str) -> str:
    """Return `prefix` upper-cased, or raise ValueError with the reason."""
    prefix = prefix.upper()
    if not 1 <= len(prefix) <= MAX_LENGTH - RANDOM_LENGTH:
        raise ValueError(f"must be 1 to {MAX_LENGTH - RANDOM_LENGTH} characters")
    bad = sorted(set(prefix) - set(ALPHABET))
    if bad:
        raise ValueError(f"may only use {ALPHABET} (not {''.join(bad)})")
    return prefix


def new_reference(prefix: str) -> str:
    """A fresh reference: `prefix` plus five random characters of the alphabet, each equally likely.

    One draw below 31**5 read as five base-31 digits: one call for randomness, where a draw per character
    was five (the operating system's, each a system call) on every submission's path.
    """
    number = secrets.randbelow(len(ALPHABET) ** RANDOM_LENGTH)
    characters = []
    for _ in range(RANDOM_LENGTH):
        number, digit = divmod(number, len(ALPHABET))
        characters.append(ALPHABET[digit])
    return prefix + "".join(characters)


def normalize_reference(text: str) -> str:
    """What a caller typed, as stored: upper case, spaces and dashes dropped."""
    return text.replace(" ", "").replace("-", "").upper()
