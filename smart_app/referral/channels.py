"""The safe-contact channels a patient can choose for the follow-up, and their words for the clinician."""

from __future__ import annotations

from collections.abc import Callable

from smart_app.ops.i18n import gettext as _
from smart_app.ops.i18n import label_for

CHANNELS = ("none", "phone", "text", "email", "portal", "in_person")

# Words by code, translated only when asked for, and only the one asked for.
_CHANNEL_LABELS: dict[str, Callable[[], str]] = {
    "none": lambda: _("No contact is safe: the patient will reach out"),
    "phone": lambda: _("Phone"), "text": lambda: _("Text message"), "email": lambda: _("Email"),
    "portal": lambda: _("Patient portal"), "in_person": lambda: _("In person at a visit"),
}


def channel_label(channel: str) -> str:
    return label_for(_CHANNEL_LABELS, channel)
