"""What names a cached artifact or a run, so that adding a setting does not rename old ones.

A setting added after results were published has a neutral value: the one under which
everything behaves exactly as before it existed. Identities leave such a setting out while it
holds that value, so datasets, stand-ins and runs made before it keep their cache keys and
folders. A changed default is not a later field: it must change every affected identity.
"""

from __future__ import annotations


def without_neutral(settings: dict, later: dict) -> dict:
    """`settings` less the later fields (`later`: name -> neutral value) that hold their neutral value."""
    return {k: v for k, v in settings.items() if not (k in later and v == later[k])}
