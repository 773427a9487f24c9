"""What follows a completed self-screen beyond storing it: the one place the forced clinician response is opened."""

from __future__ import annotations

from smart_app.followup import open_if_positive_self_screen
from smart_app.launch.state import Launch


def after_self_screen(launch: Launch) -> None:
    """Called once per completed tablet screen, after it is stored in the launch (``data["screening"]`` with
    ``administered: "self"``, also at the top of ``launch.data``) and committed. A positive self-screen opens the
    forced-response item (smart_app/followup/items.py), which the clinician sees after hand-back."""
    open_if_positive_self_screen(launch)
