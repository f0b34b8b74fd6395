"""UIUC Event8 (Li & Fei-Fei 2007): ``ROOT/<event>/<image>.jpg`` for the eight sports events
(RockClimbing, badminton, bocce, croquet, polo, rowing, sailing, snowboarding).

No official split: the standard protocol (in the manifest) draws 70 training and
60 test images per class at random.
"""

from __future__ import annotations

from featkit.data.folder import ClassFolderReader
from featkit.data.registry import register_reader


@register_reader
class Event8(ClassFolderReader):
    """Classes are the sorted event folder names (case-sensitive, so RockClimbing comes first)."""

    name = "event8"
