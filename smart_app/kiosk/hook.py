"""What follows a completed self-screen beyond storing it: the one place the forced clinician response is opened."""

from __future__ import annotations

from smart_app.launch.state import Launch


def after_self_screen(launch: Launch) -> None:
    """Called once per completed tablet screen, after it is stored in the launch (``data["screening"]`` with
    ``administered: "self"``, also at the top of ``launch.data``) and committed. The forced-response item of a
    positive self-screen is opened from here; until that feature is installed there is nothing more to do."""
    del launch
