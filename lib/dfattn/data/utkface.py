"""UTKFace's file names: ``AGE_GENDER_RACE_DATETIME.jpg``, the dataset's own labels.

Age in years; gender 0 male, 1 female; race 0 White, 1 Black, 2 Asian, 3 Indian, 4 Others. The
book uses them only to report false alarms by group (chapter 4), never to train or select.
"""

from __future__ import annotations

import re
from pathlib import PurePath

GENDERS = ("male", "female")
RACES = ("White", "Black", "Asian", "Indian", "Others")
AGE_GROUPS = ((0, 19, "0-19"), (20, 39, "20-39"), (40, 59, "40-59"), (60, 200, "60+"))
_NAME = re.compile(r"^(\d{1,3})_([01])_([0-4])_")


def age_group(age: int) -> str:
    for low, high, label in AGE_GROUPS:
        if low <= age <= high:
            return label
    raise ValueError(f"age {age} outside 0-200")


def utkface_attributes(name: str) -> dict[str, str] | None:
    """``{"age": group, "gender": ..., "race": ...}`` from a UTKFace file name (any folder
    prefix), or ``None`` for a name that does not follow the pattern (some UTKFace files lack a
    field)."""
    match = _NAME.match(PurePath(name).name)
    if match is None:
        return None
    age, gender, race = (int(g) for g in match.groups())
    return {"age": age_group(age), "gender": GENDERS[gender], "race": RACES[race]}


__all__ = ["AGE_GROUPS", "GENDERS", "RACES", "age_group", "utkface_attributes"]
